"""The agent's current models (re-ranker, request-value model, shift detector, interest encoder):
fetched from the cloud registry, checked against the release key, swapped whole.

A reply is installed only if its manifest is signed by the one public key in the agent's
settings, names the kind asked for, and its file's sha256 and version match the bytes; then the
ONNX session is built (its inputs are checked there). Only then does the slot switch (one
reference assignment), so a request in flight finishes on the model it started with. A model
that fails any check is refused (`tandem_agent_model_updates_total{outcome="refused"}` and a
log line) and the old one keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from device_agent import metrics
from device_agent.inference.interest_encoder import OnnxInterestEncoder
from device_agent.inference.reranker import ModelIntegrityError, OnnxReranker, check_sha256
from device_agent.policy.detector import ShiftDetector
from device_agent.policy.value import RequestValueModel
from device_agent.ports import CloudError, CloudPort, DeviceModelBytes
from tandem_core.artifacts import ArtifactIntegrityError, sha256_bytes
from tandem_core.release import (
    INTEREST_ENCODER,
    RERANKER,
    SHIFT_DETECTOR,
    VALUE_MODEL,
    check_manifest,
)
from tandem_core.signing import Verifier

log = logging.getLogger(__name__)
UNSIGNED_OK = Verifier(None)  # local installs (tests, benchmarks): sha256 and schema only


def verified_manifest(reply: DeviceModelBytes, kind: str, verifier: Verifier) -> dict[str, Any]:
    """The reply's manifest once its signature, kind, version and file sha256 all hold."""
    try:
        manifest = json.loads(reply.manifest) if reply.manifest else {}
    except ValueError as exc:
        raise ArtifactIntegrityError(f"unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactIntegrityError("the manifest is not a JSON object")
    if not manifest and not verifier.signed:  # a cloud that sends none, allowed in development
        return {"version": reply.version, "embedding_version": reply.embedding_version}
    check_manifest(manifest, verifier, (kind,))
    digests = manifest.get("sha256")
    name = manifest.get("file")
    if not isinstance(digests, Mapping) or not isinstance(name, str) or name not in digests:
        raise ArtifactIntegrityError("the manifest names no model file")
    if sha256_bytes(reply.onnx_model) != digests[name] or reply.sha256 != digests[name]:
        raise ArtifactIntegrityError("the model bytes do not match the signed sha256")
    if manifest.get("version") != reply.version:
        raise ArtifactIntegrityError("the reply's version is not the signed one")
    if str(manifest.get("embedding_version", "")) != reply.embedding_version:
        raise ArtifactIntegrityError("the reply's embedding version is not the signed one")
    return manifest


class ModelSlot:
    """One kind's current model; readers take `current` once per call."""

    kind = ""

    def __init__(self, threads: int = 1, verifier: Verifier = UNSIGNED_OK) -> None:
        self.threads, self.verifier = threads, verifier
        self.current: Any = None
        self.current_version = ""
        self.refused = 0

    @property
    def version(self) -> str:
        return self.current_version if self.current is not None else ""

    def _refuse(self, version: str, exc: Exception) -> bool:
        self.refused += 1
        metrics.MODEL_UPDATES.labels(self.kind, "refused").inc()
        log.warning("refused %s %s: %s", self.kind, version, exc)
        return False

    def _install(self, model: Any, version: str) -> bool:
        self.current, self.current_version = model, version  # the swap: one assignment each
        metrics.MODEL_UPDATES.labels(self.kind, "installed").inc()
        log.info("installed %s %s", self.kind, version)
        return True

    def build(self, reply: DeviceModelBytes) -> Any:
        raise NotImplementedError

    def refresh(self, client: CloudPort, agent_id: str, timeout_s: float) -> bool:
        """Ask the registry for a newer model of this kind; True when one was installed."""
        try:
            reply = client.device_model(agent_id, self.version, timeout_s, kind=self.kind)
        except CloudError as exc:
            if "NOT_FOUND" in str(exc):  # nothing of this kind published (yet)
                metrics.MODEL_UPDATES.labels(self.kind, "none_published").inc()
                log.debug("no %s published: %s", self.kind, exc)
                return False
            metrics.MODEL_UPDATES.labels(self.kind, "unreachable").inc()
            log.info("model registry unreachable (%s): %s", self.kind, exc)
            return False
        if reply.not_modified:
            return False
        try:
            verified_manifest(reply, self.kind, self.verifier)
            model = self.build(reply)
        except Exception as exc:
            return self._refuse(reply.version, exc)
        return self._install(model, reply.version)


class RerankerSlot(ModelSlot):
    """Holds one OnnxReranker; a swap never drops or mixes a request."""

    kind = RERANKER
    current: OnnxReranker | None

    def build(self, reply: DeviceModelBytes) -> OnnxReranker:
        return OnnxReranker.from_bytes(
            reply.onnx_model, reply.sha256, reply.version, self.threads, reply.embedding_version
        )

    def install(
        self, model_bytes: bytes, sha256: str, version: str, embedding_version: str = ""
    ) -> bool:
        """A local install (sha256 and inputs checked; no signature: nothing crossed a network)."""
        try:
            model = OnnxReranker.from_bytes(
                model_bytes, sha256, version, self.threads, embedding_version
            )
        except (ModelIntegrityError, Exception) as exc:  # a broken file must never go live
            return self._refuse(version, exc)
        return self._install(model, version)


class ValueModelSlot(ModelSlot):
    """Holds the request-value model (`value(features)`), None until one arrives."""

    kind = VALUE_MODEL

    def __init__(
        self, threads: int = 1, verifier: Verifier = UNSIGNED_OK, model: Any = None
    ) -> None:
        super().__init__(threads, verifier)
        self.current = model  # any object with `value(features) -> float` (tests: a fixed one)

    def build(self, reply: DeviceModelBytes) -> RequestValueModel:
        check_sha256(reply.onnx_model, reply.sha256, "the value model")
        return RequestValueModel(reply.onnx_model, self.threads)


class ShiftDetectorSlot(ModelSlot):
    """Holds the learned shift detector (`probability(view, prior)`), None until one arrives."""

    kind = SHIFT_DETECTOR
    current: ShiftDetector | None

    def build(self, reply: DeviceModelBytes) -> ShiftDetector:
        check_sha256(reply.onnx_model, reply.sha256, "the shift detector")
        return ShiftDetector(reply.onnx_model, self.threads)


class InterestEncoderSlot(ModelSlot):
    """Holds the private Recommend's interest encoder, None until one arrives."""

    kind = INTEREST_ENCODER
    current: OnnxInterestEncoder | None

    def build(self, reply: DeviceModelBytes) -> OnnxInterestEncoder:
        return OnnxInterestEncoder.from_bytes(
            reply.onnx_model, reply.sha256, reply.version, self.threads, reply.embedding_version
        )


class Refreshable(Protocol):
    def refresh(self, client: CloudPort, agent_id: str, timeout_s: float) -> bool: ...


class ModelPoller:
    """Polls the registry for every slot every `interval_s` in a daemon thread until stopped."""

    def __init__(
        self,
        slots: Refreshable | Sequence[Refreshable],
        client: CloudPort,
        agent_id: str,
        interval_s: float,
    ) -> None:
        self.slots = list(slots) if isinstance(slots, Sequence) else [slots]
        self.client, self.agent_id, self.interval_s = client, agent_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)

    def poll(self) -> None:
        for slot in self.slots:
            slot.refresh(self.client, self.agent_id, timeout_s=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
