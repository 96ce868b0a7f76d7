"""Hot swap of the ranker bundle: follows `current`, checks the new version, replaces it whole.

A version is installed only if its signature and sha256s pass, its ONNX ranker has the
inputs and outputs serving feeds, and its embedding version and catalogue match what this
replica serves (devices' re-rankers and the federated model's rows depend on both: changing
them is a restart with a matched re-ranker, not a swap). The recommender is replaced by one
reference assignment, so a request in flight finishes on the one it started with. A refused
version is counted (`tandem_cloud_model_loads_total{outcome="refused"}`), logged, and the old
one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from cloud_service import metrics
from cloud_service.recommender.serving import OnlineRecommender
from cloud_service.registry.bundle import ServingBundle, load_bundle
from tandem_core.artifacts import MANIFEST, ArtifactIntegrityError
from tandem_core.release import RANKER_BUNDLE, resolve
from tandem_core.signing import Verifier

log = logging.getLogger(__name__)
RANKER_INPUTS = ("history", "candidates")
RANKER_OUTPUTS = ("ctr", "ctcvr")


def check_ranker_schema(recommender: OnlineRecommender) -> None:
    inputs = tuple(i.name for i in recommender.session.get_inputs())
    outputs = tuple(o.name for o in recommender.session.get_outputs())
    if inputs != RANKER_INPUTS or outputs != RANKER_OUTPUTS:
        raise ArtifactIntegrityError(f"ranker takes {inputs} → {outputs}, serving feeds "
                                     f"{RANKER_INPUTS} → {RANKER_OUTPUTS}")  # fmt: skip


def check_compatible(new: ServingBundle, old: ServingBundle) -> None:
    if new.embedding_version != old.embedding_version:
        raise ArtifactIntegrityError(
            f"embedding version {new.embedding_version!r} is not the served "
            f"{old.embedding_version!r} (restart with a matched re-ranker to change it)"
        )
    if (new.n_items, new.dim) != (old.n_items, old.dim):
        raise ArtifactIntegrityError(
            f"catalogue {new.n_items}×{new.dim} is not the served {old.n_items}×{old.dim}"
        )


class BundleWatch:
    """Checks the bundle path every `interval_s` in a daemon thread; `check()` once by hand."""

    def __init__(
        self,
        path: Path,
        verifier: Verifier,
        current: Callable[[], OnlineRecommender],
        build: Callable[[ServingBundle], OnlineRecommender],
        install: Callable[[OnlineRecommender], None],
        interval_s: float,
    ) -> None:
        self.path, self.verifier, self.interval_s = Path(path), verifier, interval_s
        self.current, self.build, self.install = current, build, install
        self._seen = self._stamp()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stamp(self) -> tuple[Path, int] | None:
        try:
            where = resolve(self.path)
            return where, (where / MANIFEST).stat().st_mtime_ns
        except (OSError, ArtifactIntegrityError):
            return None

    def check(self) -> bool:
        """True when a new version was installed."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        try:
            bundle = load_bundle(self.path, self.verifier)
            old = self.current()
            check_compatible(bundle, old.bundle)
            recommender = self.build(bundle)
            check_ranker_schema(recommender)
        except Exception as exc:
            metrics.MODEL_LOADS.labels(RANKER_BUNDLE, "refused").inc()
            log.warning("refused ranker bundle at %s: %s", stamp[0], exc)
            return False
        self.install(recommender)
        metrics.MODEL_LOADS.labels(RANKER_BUNDLE, "installed").inc()
        log.info("serving ranker bundle %s (was %s)", bundle.version, old.bundle.version)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bundle-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
