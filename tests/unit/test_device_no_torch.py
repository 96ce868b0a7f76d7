"""The device agent (REST, policy, ONNX inference) never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_device_inference_does_not_import_torch() -> None:
    code = (
        "import sys, device_agent.main, device_agent.build, device_agent.service, "
        "device_agent.inference.reranker; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
