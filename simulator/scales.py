"""Named world sizes used by the training, demo and benchmark commands."""

from __future__ import annotations

from simulator.world import WorldConfig

SCALES = {
    "default": WorldConfig(),
    "small": WorldConfig(n_users=600, n_items=8_000, n_categories=24),
    "tiny": WorldConfig(n_users=120, n_items=1_500, n_categories=12),  # tests
}
