"""The agent's current re-ranker: fetched from the cloud registry, sha256-checked, swapped whole."""

from __future__ import annotations

import logging
import threading

from device_agent import metrics
from device_agent.inference.reranker import ModelIntegrityError, OnnxReranker
from device_agent.ports import CloudError, CloudPort

log = logging.getLogger(__name__)


class RerankerSlot:
    """Holds one OnnxReranker; readers take the reference once per call, so a swap never
    drops or mixes a request. A model that fails its check is refused; the old one stays."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.current: OnnxReranker | None = None
        self.refused = 0

    @property
    def version(self) -> str:
        model = self.current
        return model.version if model is not None else ""

    def install(self, model_bytes: bytes, sha256: str, version: str) -> bool:
        try:
            model = OnnxReranker.from_bytes(model_bytes, sha256, version, self.threads)
        except (ModelIntegrityError, Exception) as exc:  # a broken file must never go live
            self.refused += 1
            metrics.MODEL_UPDATES.labels("refused").inc()
            log.warning("refused device model %s: %s", version, exc)
            return False
        self.current = model
        metrics.MODEL_UPDATES.labels("installed").inc()
        return True

    def refresh(self, client: CloudPort, agent_id: str, timeout_s: float) -> bool:
        """Ask the registry for a newer model; True when one was installed."""
        try:
            reply = client.device_model(agent_id, self.version, timeout_s)
        except CloudError as exc:
            metrics.MODEL_UPDATES.labels("unreachable").inc()
            log.info("model registry unreachable: %s", exc)
            return False
        if reply.not_modified:
            return False
        return self.install(reply.onnx_model, reply.sha256, reply.version)


class ModelPoller:
    """Polls the registry every `interval_s` in a daemon thread until stopped."""

    def __init__(
        self, slot: RerankerSlot, client: CloudPort, agent_id: str, interval_s: float
    ) -> None:
        self.slot, self.client, self.agent_id, self.interval_s = slot, client, agent_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.slot.refresh(self.client, self.agent_id, timeout_s=5.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
