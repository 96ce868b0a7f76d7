"""World → traffic → time split → baselines → held-out table; shared by the demo and benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from simulator.baselines import ItemCF, Popularity, Scorer
from simulator.cloud import ReferenceCloud
from simulator.dataset import RankingTask, TimeSplit, click_histories, ranking_task, split_by_time
from simulator.evaluation import RankerReport, evaluate_scorer
from simulator.logs import Impressions, Traffic, generate_traffic
from simulator.stats import WorldStats, world_stats
from simulator.world import World, WorldConfig

HISTORY_LEN = 30


@dataclass(frozen=True)
class HeldOut:
    """The held-out part of a split with everything a scorer needs to be evaluated on it."""

    split: TimeSplit
    train_history: np.ndarray  # (len(train), HISTORY_LEN) clicks before each train step
    valid_history: np.ndarray
    test_history: np.ndarray  # (len(test), HISTORY_LEN) clicks before each test step
    task: RankingTask


@dataclass(frozen=True)
class Experiment:
    world: World
    traffic: Traffic
    stats: WorldStats
    held_out: HeldOut
    seconds: float


def build_experiment(cfg: WorldConfig, progress: bool = False) -> Experiment:
    start = time.perf_counter()
    world = World(cfg)
    traffic = generate_traffic(world, ReferenceCloud(world), seed=cfg.seed, progress=progress)
    held_out = hold_out(traffic.impressions, world.catalog.popularity, seed=cfg.seed)
    return Experiment(
        world, traffic, world_stats(world, traffic), held_out, time.perf_counter() - start
    )


def hold_out(imp: Impressions, popularity: np.ndarray, seed: int = 0) -> HeldOut:
    """Time split; histories for the test rows come from everything before each step."""
    split = split_by_time(imp)
    history = click_histories(imp, HISTORY_LEN)
    # each part keeps the log's row order, so its histories line up row for row
    parts = [history[np.isin(imp.session, np.unique(p.session))] for p in split]
    context = Impressions.concat([split.train, split.valid])
    task = ranking_task(split.test, context, popularity, max_len=HISTORY_LEN, seed=seed)
    return HeldOut(split, parts[0], parts[1], parts[2], task)


def baseline_scorers(split: TimeSplit, n_items: int) -> list[Scorer]:
    train = Impressions.concat([split.train, split.valid])
    return [Popularity(train, n_items), ItemCF(train, n_items)]


def evaluate_all(scorers: list[Scorer], held_out: HeldOut) -> list[RankerReport]:
    return [
        evaluate_scorer(s, held_out.split.test, held_out.test_history, held_out.task)
        for s in scorers
    ]
