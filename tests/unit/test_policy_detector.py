"""The learned shift detector: ONNX matches torch, one encoding, a switch raises it, its prior,
refusals, its release kind, its label model, and no torch on the device path."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

import training.policy.detector as training_detector
from device_agent.inference.models import ShiftDetectorSlot
from device_agent.policy.detector import (
    EVENT_FEATURES,
    SCALARS,
    WINDOW,
    ShiftDetector,
    ShiftPrior,
    detector_inputs,
)
from device_agent.policy.features import SessionView
from device_agent.ports import CloudError, DeviceModelBytes
from tandem_core.artifacts import sha256_bytes
from tandem_core.release import SHIFT_DETECTOR, load_verified
from tandem_core.signing import Verifier
from training.policy.detector import DetectorNet, export_detector, fit_detector
from training.policy.switch_hmm import PoolLives, SwitchHMM
from training.release import SHIFT_ONNX, release_shift_detector

pytestmark = pytest.mark.unit
N_CATS, POOL = 8, 48


def view_after(clicks_in: int, n_pages: int, rng: np.random.Generator) -> SessionView:
    """A pool built around category 0 (a click on it just before); then n_pages pages of the
    pool, the user clicking items of `clicks_in` (0: still the pool's intent; 7: a category the
    pool does not hold, offered at the tail of each page)."""
    view = SessionView(N_CATS, POOL, 4)
    view.on_page(np.zeros(4, dtype=int), np.array([True, False, False, False]))
    view.on_pool(np.array([0] * 36 + [1] * 12))
    for _ in range(n_pages):
        cats = np.array([0, 0, 1, clicks_in])
        view.on_page(cats, (cats == clicks_in) & (rng.random(4) < 0.5))
    return view


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        switched = k % 2 == 1
        view = view_after(7 if switched else 0, int(rng.integers(1, 5)), rng)
        rows.append((*detector_inputs(view, prior=0.02), float(switched)))
    events, scalars, labels = (np.stack(a) for a in zip(*rows, strict=True))
    return events.astype(np.float32), scalars.astype(np.float32), labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[DetectorNet, Path]:
    events, scalars, labels = synthetic(200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on shared cores
    try:
        model = fit_detector(events, scalars, labels, epochs=40)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("detector") / SHIFT_ONNX
    export_detector(model, path, fleet=0.02)
    return model, path


def test_onnx_matches_torch(trained: tuple[DetectorNet, Path]) -> None:
    model, path = trained
    events, scalars, _ = synthetic(64, seed=1)
    onnx_p = ShiftDetector(path.read_bytes()).probabilities(events, scalars)
    with torch.no_grad():
        torch_p = model(torch.as_tensor(events), torch.as_tensor(scalars)).numpy()
    np.testing.assert_allclose(onnx_p, torch_p, rtol=1e-4, atol=1e-6)


def test_training_and_device_share_one_encoding(trained: tuple[DetectorNet, Path]) -> None:
    assert training_detector.detector_inputs is detector_inputs
    view = view_after(0, 2, np.random.default_rng(3))
    events, scalars = detector_inputs(view, prior=0.03)
    assert events.shape == (WINDOW, len(EVENT_FEATURES)) and scalars.shape == (len(SCALARS),)
    detector = ShiftDetector(trained[1].read_bytes())
    assert detector.probability(view, 0.03) == pytest.approx(
        float(detector.probabilities(events[None], scalars[None])[0])
    )


def test_clicks_moving_off_the_pool_raise_the_probability(
    trained: tuple[DetectorNet, Path],
) -> None:
    detector = ShiftDetector(trained[1].read_bytes())
    rng = np.random.default_rng(5)
    stay = [detector.probability(view_after(0, 3, rng), 0.02) for _ in range(20)]
    moved = [detector.probability(view_after(7, 3, rng), 0.02) for _ in range(20)]
    assert np.mean(moved) > np.mean(stay) + 0.2
    assert detector.fleet_prior == pytest.approx(0.02)


def test_prior_tracker_follows_the_device_and_stays_bounded() -> None:
    pool = np.array([0.9, 0.1, 0.0])
    wanders, stays = ShiftPrior(fleet=0.05), ShiftPrior(fleet=0.05)
    assert wanders.rate() == pytest.approx(0.05)
    for _ in range(5000):
        wanders.on_page(pool, np.array([0, 2]), np.array([False, True]))  # a click off the pool
        stays.on_page(pool, np.array([0, 2]), np.array([True, False]))
    assert stays.rate() < 0.05 < 0.5 < wanders.rate() <= 1.0
    cap = 1.0 / (1.0 - wanders.decay)
    assert wanders.pages <= cap + 1e-9 and wanders.events <= cap + 1e-9


def export_wrong_width(path: Path) -> None:
    class Wide(torch.nn.Module):
        def forward(self, events: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(events.sum(dim=(1, 2)) + scalars.sum(dim=1))

    example = (torch.zeros(2, WINDOW, len(EVENT_FEATURES) + 1), torch.zeros(2, len(SCALARS)))
    torch.onnx.export(
        Wide(), example, str(path), input_names=["events", "scalars"],
        output_names=["probability"], opset_version=17, dynamo=False,
        dynamic_axes={"events": {0: "batch"}, "scalars": {0: "batch"}},
    )  # fmt: skip


class OneReply:
    """A registry that always answers with the same model bytes."""

    def __init__(self, model: bytes, sha256: str) -> None:
        self.reply = DeviceModelBytes("shift-1", sha256, model, False, kind=SHIFT_DETECTOR)

    def device_model(
        self, agent_id: str, version: str, timeout_s: float, kind: str = ""
    ) -> DeviceModelBytes:
        if kind != SHIFT_DETECTOR:
            raise CloudError("error", "NOT_FOUND: no such kind")
        return self.reply


def test_bad_models_are_refused(tmp_path: Path, trained: tuple[DetectorNet, Path]) -> None:
    export_wrong_width(tmp_path / "wide.onnx")
    wide = (tmp_path / "wide.onnx").read_bytes()
    with pytest.raises(ValueError, match="events"):
        ShiftDetector(wide)
    good = trained[1].read_bytes()
    slot = ShiftDetectorSlot()
    assert not slot.refresh(OneReply(wide, sha256_bytes(wide)), "a", 1.0)  # type: ignore[arg-type]
    assert not slot.refresh(OneReply(good, "0" * 64), "a", 1.0)  # type: ignore[arg-type]
    assert slot.current is None and slot.refused == 2
    assert slot.refresh(OneReply(good, sha256_bytes(good)), "a", 1.0)  # type: ignore[arg-type]
    assert slot.version == "shift-1"
    events = np.full((1, WINDOW, len(EVENT_FEATURES)), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="finite"):
        ShiftDetector(good).probabilities(events, np.zeros((1, len(SCALARS))))


def test_release_writes_a_shift_detector_version(
    tmp_path: Path, trained: tuple[DetectorNet, Path]
) -> None:
    kind_dir = tmp_path / SHIFT_DETECTOR
    version = release_shift_detector(kind_dir, trained[1], signer=None)
    artifact = load_verified(kind_dir, Verifier(None), (SHIFT_DETECTOR,))
    assert version.startswith("shift-") and artifact.files[SHIFT_ONNX] == trained[1].read_bytes()


def test_switch_model_fit_raises_likelihood_and_finds_the_hazard() -> None:
    rng = np.random.default_rng(0)
    lives = []
    for _ in range(600):
        length = int(rng.integers(2, 12))
        z = np.cumsum(rng.random(length) < 0.15) > 0
        z[0] = False
        on = rng.random((length, 4)) < 0.7
        p = np.where(z[:, None], np.where(on, 0.03, 0.10), np.where(on, 0.30, 0.03))
        lives.append((on.astype(np.int64), rng.random((length, 4)) < p, np.ones_like(on), True))
    hmm = SwitchHMM.initial(4)
    trace = hmm.fit(PoolLives.pack(lives), iters=30)
    assert all(b >= a - 1e-6 for a, b in pairwise(trace))
    assert 0.08 < hmm.hazard < 0.25


def test_device_detector_imports_no_torch() -> None:
    code = (
        "import sys, device_agent.policy.detector, device_agent.inference.models; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_the_agent_decides_on_an_installed_detector(trained: tuple[DetectorNet, Path]) -> None:
    """Installed in the agent, the detector's probability (with the device's own prior) is the
    step's shift and the no-value-model rule's value; the value features keep the formula."""
    from device_agent.inference.models import ShiftDetectorSlot
    from tests.unit.test_agent_service import FakeCloud, service

    agent = service(FakeCloud(), request_budget=0.0)
    slot = ShiftDetectorSlot()
    slot.current = ShiftDetector(trained[1].read_bytes())
    agent.shift_detector = slot
    pages = [agent.recommend("d", 4) for _ in range(3)]
    s = agent.sessions.get("d")
    assert s.shift_prior is not None and s.shift_prior.pages > 0  # the device's own history
    last = pages[-1].decision
    assert last.shift == last.value != last.features[0]
    assert 0.0 < last.shift < 1.0
    assert agent.status()["shift_detector"] == "onnx"
