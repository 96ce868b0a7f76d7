"""The README's main command runs end to end (on the small world) and prints its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def test_demo_prints_world_and_ranker_tables(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "localrun.demo", "--scale", "small", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "| intent switches / step |" in text
    rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| popularity", "| item-cf", "| din (ours)"))
    ]
    assert len(rows) == 3
    for row in rows:
        cells = [float(c) for c in row.strip("|").split("|")[1:]]
        assert all(0.0 <= c <= 1.0 for c in cells)
    assert (tmp_path / "ranker" / "manifest.json").exists()
