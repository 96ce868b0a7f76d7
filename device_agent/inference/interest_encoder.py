"""The private Recommend on the device: the interest encoder in ONNX Runtime, and what is sent.

The encoder (training/private_mode) turns the embedding rows of the device's last clicks into a
weighted pseudo-history of M rows; that, not the event window, is what a private request
carries. Without an encoder it carries the plainest pseudo-history, computed here: one row, the
mean of the clicked rows, standing for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device_agent.inference.reranker import ModelIntegrityError, check_sha256
from device_agent.ports import PrivateInterest
from tandem_core.onnx_session import cpu_session

INPUTS = ("rows", "mask")
OUTPUTS = ("interests", "weights")
FALLBACK_CLICKS = 30  # the mean row's window: the ranker's history length


class OnnxInterestEncoder:
    """An ONNX Runtime session of the encoder; its history length and dim come from the model."""

    def __init__(
        self, model_bytes: bytes, version: str, threads: int = 1, embedding_version: str = ""
    ) -> None:
        self.session = cpu_session(model_bytes, threads)
        self.version, self.embedding_version = version, embedding_version
        inputs = self.session.get_inputs()
        names = tuple(i.name for i in inputs)
        outputs = tuple(o.name for o in self.session.get_outputs())
        if names != INPUTS or outputs != OUTPUTS:
            raise ModelIntegrityError(f"unexpected encoder signature {names} -> {outputs}")
        _, length, dim = inputs[0].shape
        if not isinstance(length, int) or not isinstance(dim, int):
            raise ModelIntegrityError("the encoder's history length and dim must be fixed")
        self.history_len, self.dim = length, dim

    @classmethod
    def from_bytes(
        cls,
        model_bytes: bytes,
        expected_sha256: str,
        version: str,
        threads: int = 1,
        embedding_version: str = "",
    ) -> OnnxInterestEncoder:
        check_sha256(model_bytes, expected_sha256, f"interest encoder {version}")
        return cls(model_bytes, version, threads, embedding_version)

    def encode(self, clicked_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, dim) pseudo-history and (M,) weights of the last `history_len` clicked rows
        (oldest first), left-padded as in training."""
        tail = np.asarray(clicked_rows, dtype=np.float32)[-self.history_len :]
        if tail.ndim != 2 or tail.shape[1] != self.dim:
            raise ValueError(f"clicked rows must be (n, {self.dim}), got {tail.shape}")
        rows = np.zeros((1, self.history_len, self.dim), dtype=np.float32)
        mask = np.zeros((1, self.history_len), dtype=np.float32)
        if len(tail):
            rows[0, -len(tail) :], mask[0, -len(tail) :] = tail, 1.0
        interests, weights = self.session.run(list(OUTPUTS), {"rows": rows, "mask": mask})
        return np.asarray(interests[0], np.float32), np.asarray(weights[0], np.float32)


def mean_row(clicked_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The encoder-free pseudo-history: (1, dim) mean of the clicked rows, weight = their count
    (the ranker's mean-of-behaviour feature is then exact; its attention sees one row)."""
    rows = np.asarray(clicked_rows, dtype=np.float32)
    return rows.mean(axis=0, keepdims=True), np.array([len(rows)], dtype=np.float32)


def private_interest(
    clicked: Sequence[np.ndarray], encoder: OnnxInterestEncoder | None, version: str
) -> PrivateInterest:
    """What a private request sends for these clicked rows (rows of embedding `version`): the
    encoder's pseudo-history when `encoder` is given, else the mean row (`mean_row`); the cloud
    retrieves by the set's weighted mean. No clicks: nothing but the request itself."""
    if not clicked:
        return PrivateInterest(np.empty((0, 0), np.float32), np.empty(0, np.float32), version)
    rows = np.stack([np.asarray(r, dtype=np.float32) for r in clicked])
    if encoder is not None:
        interests, weights = encoder.encode(rows)
    else:
        interests, weights = mean_row(rows[-FALLBACK_CLICKS:])
    return PrivateInterest(interests, weights, version)
