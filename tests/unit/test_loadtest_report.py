"""The load report reads locust's CSVs and the cloud-rate samples into its table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.feed import ScriptedFeed
from loadtest.report import level_rows, markdown, read_history, read_stats, share_series, write
from loadtest.run import seconds
from loadtest.sampler import Sample, cloud_recommends, read_samples, write_samples

pytestmark = pytest.mark.unit

PCT = "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
STATS = f"""Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,{PCT}
POST,/v1/events,90,0,3,3.1,1.5,20.0,14.0,9.0,0.0,3,3,3,4,5,6,8,12,17,17,17
POST,/v1/recommend,100,0,2,4.0,1.0,25.0,331.0,10.0,0.0,2,3,4,7,11,13,19,21,25,25,25
,Aggregated,190,0,3,3.7,1.0,25.0,170.0,19.0,0.0,3,3,4,4,8,11,14,19,25,25,25
"""
HISTORY = f"""Timestamp,User Count,Type,Name,Requests/s,Failures/s,{PCT},Total Request Count,\
Total Failure Count,Total Median Response Time,Total Average Response Time,Total Min Response \
Time,Total Max Response Time,Total Average Content Size
100,0,,Aggregated,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,0,0,0,0.0,0,0,0
101,4,POST,/v1/recommend,8.0,0.0,2,3,4,7,11,13,19,21,25,25,25,40,0,2,4.0,1.0,25.0,331
102,4,POST,/v1/recommend,10.0,0.0,2,3,4,7,11,14,19,22,25,25,25,100,0,2,4.0,1.0,25.0,331
"""


def write_run(out: Path, cloud_calls: int = 24, budget: float = 0.2) -> None:
    (out / "b0.20_stats.csv").write_text(STATS)
    (out / "b0.20_stats_history.csv").write_text(HISTORY)
    samples = [Sample(0.0, 0, 0, 0, 0.0), Sample(1.0, 40, 6, 10, 0.3)]
    write_samples(out / "b0.20_samples.csv", [*samples, Sample(2.0, 100, 18, 24, 0.5)])
    level = {
        "tag": "b0.20", "budget": budget, "users": 4, "duration_s": 10.0, "agents": 2,
        "app_steps": 100, "paced_requests": 18, "cloud_recommends": cloud_calls,
        "outcomes": {"initial": 4, "refreshed": 18, "kept": 78},
    }  # fmt: skip
    run = {"levels": [level], "tolerance": 0.02, "command": "python -m loadtest.run",
           "world_scale": "tiny", "value_model": False, "seconds": 30.0}  # fmt: skip
    (out / "run.json").write_text(json.dumps(run))


def test_stats_and_history_are_read_by_endpoint(tmp_path: Path) -> None:
    write_run(tmp_path)
    stats = read_stats(tmp_path / "b0.20_stats.csv")
    rec = stats["/v1/recommend"]
    assert (rec.requests, rec.failures, rec.rps) == (100, 0, 10.0)
    assert (rec.p50, rec.p95, rec.p99) == (2, 13, 21)
    assert stats["Aggregated"].requests == 190
    history = read_history(tmp_path / "b0.20_stats_history.csv")
    assert [h.rps for h in history] == [8.0, 10.0] and history[-1].p99 == 22


def test_level_row_excludes_first_lists_from_the_budgeted_rate(tmp_path: Path) -> None:
    write_run(tmp_path)
    (row,) = level_rows(tmp_path)
    assert row.cloud_share == pytest.approx(0.24)
    assert row.cloud_rate == pytest.approx(0.20) and row.paced_rate == pytest.approx(0.18)
    assert row.within_budget and row.app_recommends == row.agent_steps == 100
    assert "| 0.20 | 4 | 10.0 | 2 | 13 | 21 | 190 | 0 | 0.240 | 0.200 | 0.180 | yes |" in markdown(
        tmp_path
    )


def test_a_level_over_its_budget_is_marked(tmp_path: Path) -> None:
    write_run(tmp_path, cloud_calls=40)
    (row,) = level_rows(tmp_path)
    assert not row.within_budget
    assert "no (> 0.22)" in markdown(tmp_path)


def test_samples_round_trip_and_give_the_share_per_interval(tmp_path: Path) -> None:
    write_run(tmp_path)
    samples = read_samples(tmp_path / "b0.20_samples.csv")
    ts, cloud, paced = share_series(samples)
    assert ts == [1.0, 2.0]
    assert cloud == pytest.approx([10 / 40, 14 / 60]) and paced == pytest.approx([6 / 40, 12 / 60])


def test_report_files_are_written(tmp_path: Path) -> None:
    write_run(tmp_path)
    md, png = write(tmp_path)
    assert md.read_text().startswith("# Load test of the request budget")
    assert png.stat().st_size > 10_000


def test_cloud_recommend_count_is_read_from_prometheus_text() -> None:
    counts = [("OK", "Recommend", "grpc", 7), ("RESOURCE_EXHAUSTED", "Recommend", "grpc", 2),
              ("200", "Recommend", "rest", 5), ("OK", "ReportEvents", "grpc", 3)]  # fmt: skip
    text = "# TYPE tandem_cloud_requests_total counter\n" + "".join(
        f'tandem_cloud_requests_total{{code="{c}",method="{m}",transport="{t}"}} {n}.0\n'
        for c, m, t, n in counts
    )
    assert cloud_recommends(text) == 9


def test_durations_in_locust_format() -> None:
    assert [seconds(d) for d in ("60s", "2m", "1m30s", "45")] == [60, 120, 90, 45]


def test_scripted_feed_clicks_its_category_and_switches_every_n_steps() -> None:
    feed = ScriptedFeed(n_categories=5, every=2)
    page = [{"item_id": 1, "category_id": 0}, {"item_id": 2, "category_id": 1}]
    actions = []
    for _ in range(4):
        feed.begin_step()
        actions.append([e["action"] for e in feed.react(page)])
    assert actions == [["click", "exposure"]] * 2 + [["exposure", "click"]] * 2
    assert feed.switches == 1
