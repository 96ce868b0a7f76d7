"""Runs the EdgeRec re-ranker with ONNX Runtime after verifying the model file's sha256."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tandem_core.artifacts import sha256_bytes
from tandem_core.onnx_session import cpu_session

INPUTS = ("behavior", "behavior_action", "candidates", "cloud_score")


class ModelIntegrityError(RuntimeError):
    """The model bytes do not hash to the sha256 the registry announced."""


def check_sha256(model_bytes: bytes, expected_sha256: str, what: str) -> None:
    """Refuse model bytes that are not the ones the registry's manifest names."""
    digest = sha256_bytes(model_bytes)
    if digest != expected_sha256:
        raise ModelIntegrityError(
            f"{what}: sha256 {digest[:12]}… does not match {expected_sha256[:12]}…"
        )


class OnnxReranker:
    """An ONNX Runtime session for the device re-ranker; one intra-op thread by default."""

    def __init__(
        self, model_bytes: bytes, version: str, threads: int = 1, embedding_version: str = ""
    ) -> None:
        self.session = cpu_session(model_bytes, threads)
        self.version = version
        self.embedding_version = embedding_version  # the rows it was trained on ("" = unknown)
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS:
            raise ModelIntegrityError(f"unexpected model inputs {names}, expected {INPUTS}")

    @classmethod
    def from_bytes(
        cls,
        model_bytes: bytes,
        expected_sha256: str,
        version: str,
        threads: int = 1,
        embedding_version: str = "",
    ) -> OnnxReranker:
        check_sha256(model_bytes, expected_sha256, f"model {version}")
        return cls(model_bytes, version, threads, embedding_version)

    @classmethod
    def from_file(
        cls, path: Path, expected_sha256: str, version: str = "", threads: int = 1
    ) -> OnnxReranker:
        return cls.from_bytes(Path(path).read_bytes(), expected_sha256, version, threads)

    def score(
        self,
        behavior: np.ndarray,
        behavior_action: np.ndarray,
        candidates: np.ndarray,
        cloud_score: np.ndarray,
    ) -> np.ndarray:
        """Re-rank logits (B, C) for candidates (B, C, D) given behaviour (B, L, D) + (B, L, 3)."""
        feeds = {
            "behavior": np.ascontiguousarray(behavior, dtype=np.float32),
            "behavior_action": np.ascontiguousarray(behavior_action, dtype=np.float32),
            "candidates": np.ascontiguousarray(candidates, dtype=np.float32),
            "cloud_score": np.ascontiguousarray(cloud_score, dtype=np.float32),
        }
        (out,) = self.session.run(["score"], feeds)
        return np.asarray(out)
