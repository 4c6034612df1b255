"""The Grafana dashboard (docs/dashboard/ccm.json): valid layout, every panel queries something,
and the PromQL parser the end-to-end check relies on."""

from __future__ import annotations

import json

from ..dashboard import DASHBOARD, exposed_names, load, metric_names


def test_panels_tile_the_24_column_grid_without_overlapping() -> None:
    doc = json.loads(DASHBOARD.read_text())
    cells: set[tuple[int, int]] = set()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_the_dashboard_covers_queues_syncs_cloud_calls_leader_and_process() -> None:
    used = {name for expr in load(DASHBOARD) for name in metric_names(expr)}
    for wanted in (
        "workqueue_depth",
        "workqueue_queue_duration_seconds_bucket",
        "ccm_reconcile_total",
        "ccm_cloud_api_request_duration_seconds_count",
        "ccm_cloud_api_request_errors_total",
        "leader_election_master_status",
        "process_resident_memory_bytes",
    ):
        assert wanted in used


def test_metric_names_leaves_out_functions_labels_and_keywords() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (name, le) (rate(workqueue_work_duration_seconds_bucket"
        '{job=~"$job", name!="x{y}"}[5m]))) / on (name) group_left max(workqueue_depth) > bool 0'
    )
    assert metric_names(expr) == {"workqueue_work_duration_seconds_bucket", "workqueue_depth"}


def test_exposed_names_include_families_without_samples() -> None:
    body = '# HELP a_total A.\n# TYPE a counter\n# HELP h H.\n# TYPE h histogram\ng{x="1"} 2.0\n'
    assert exposed_names(body) == {"a", "a_total", "h", "h_bucket", "h_count", "h_sum", "g"}
