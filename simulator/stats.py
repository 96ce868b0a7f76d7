"""Summary statistics of a world's traffic: the numbers the demo prints about the world."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.logs import Traffic
from simulator.world import World


@dataclass(frozen=True)
class WorldStats:
    users: int
    items: int
    categories: int
    sessions: int
    steps: int
    impressions: int
    mean_session_steps: float
    switch_rate: float  # intent switches per feed step
    refresh_rate: float  # cloud refreshes per feed step in the log
    ctr: float
    purchase_per_click: float
    items_exposed: float  # share of the catalog shown at least once
    top1pct_click_share: float  # share of clicks on the 1 % most clicked items

    def table(self) -> str:
        rows = [
            ("users", f"{self.users:,}"), ("items", f"{self.items:,}"),
            ("categories", f"{self.categories}"), ("sessions", f"{self.sessions:,}"),
            ("feed steps", f"{self.steps:,}"), ("impressions", f"{self.impressions:,}"),
            ("mean steps / session", f"{self.mean_session_steps:.2f}"),
            ("intent switches / step", f"{self.switch_rate:.3f}"),
            ("logged refreshes / step", f"{self.refresh_rate:.3f}"),
            ("CTR", f"{self.ctr:.4f}"), ("purchases / click", f"{self.purchase_per_click:.4f}"),
            ("catalog exposed", f"{self.items_exposed:.3f}"),
            ("click share of top 1 % items", f"{self.top1pct_click_share:.3f}"),
        ]  # fmt: skip
        return "| statistic | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def world_stats(world: World, traffic: Traffic) -> WorldStats:
    imp, steps = traffic.impressions, traffic.steps
    n_items = world.cfg.n_items
    clicks = np.bincount(imp.item[imp.click.astype(bool)], minlength=n_items)
    top = np.sort(clicks)[::-1][: max(1, n_items // 100)]
    n_sessions = len(np.unique(steps.session))
    return WorldStats(
        users=world.cfg.n_users,
        items=n_items,
        categories=world.cfg.n_categories,
        sessions=n_sessions,
        steps=len(steps),
        impressions=len(imp),
        mean_session_steps=len(steps) / max(n_sessions, 1),
        switch_rate=float(steps.switched.mean()),
        refresh_rate=float(steps.refreshed.mean()),
        ctr=float(imp.click.mean()),
        purchase_per_click=float(imp.purchase.sum() / max(imp.click.sum(), 1)),
        items_exposed=float(len(np.unique(imp.item)) / n_items),
        top1pct_click_share=float(top.sum() / max(clicks.sum(), 1)),
    )
