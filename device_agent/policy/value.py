"""Value of a cloud request (uplift of refreshing now), run with ONNX Runtime only."""

from __future__ import annotations

import numpy as np

from device_agent.policy.features import FEATURES
from tandem_core.onnx_session import cpu_session


class RequestValueModel:
    """ONNX uplift model: features (N, len(FEATURES)) float32 → value (N,) in reward units."""

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        self.session = cpu_session(model_bytes, threads)
        inp = self.session.get_inputs()[0]
        if inp.shape[-1] != len(FEATURES):
            raise ValueError(f"model expects {inp.shape[-1]} features, agent has {len(FEATURES)}")
        self.input_name = inp.name

    def values(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32).reshape(-1, len(FEATURES))
        if not np.all(np.isfinite(x)):
            raise ValueError("features must be finite")
        return self.session.run(None, {self.input_name: x})[0].reshape(-1)

    def value(self, features: np.ndarray) -> float:
        return float(self.values(features)[0])
