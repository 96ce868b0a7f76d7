"""The exported ONNX value model matches its torch training model; the device path has no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from device_agent.policy.features import FEATURES
from device_agent.policy.value import RequestValueModel
from training.policy.uplift import FitConfig, export_onnx, fit_mlp, tarnet

pytestmark = pytest.mark.unit


def test_onnx_value_model_matches_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, len(FEATURES))).astype(np.float32)
    model = fit_mlp(x, x[:, 0] - x[:, 3], FitConfig(epochs=3))
    export_onnx(model, str(tmp_path / "v.onnx"))
    onnx_values = RequestValueModel((tmp_path / "v.onnx").read_bytes()).values(x)
    with torch.no_grad():
        torch_values = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(onnx_values, torch_values, rtol=1e-4, atol=1e-5)


def test_onnx_tarnet_matches_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(256, len(FEATURES))).astype(np.float32)
    w = (rng.random(256) < 0.5).astype(float)
    model = tarnet(x, w, x[:, 0] * w, np.full(256, 0.5), cfg=FitConfig(epochs=3))
    export_onnx(model, str(tmp_path / "t.onnx"))
    onnx_values = RequestValueModel((tmp_path / "t.onnx").read_bytes()).values(x)
    with torch.no_grad():
        torch_values = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(onnx_values, torch_values, rtol=1e-4, atol=1e-5)


def test_device_policy_imports_no_torch() -> None:
    code = (
        "import sys; import device_agent.policy.shift, device_agent.policy.features, "
        "device_agent.policy.pacing, device_agent.policy.value, device_agent.policy.decision; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
