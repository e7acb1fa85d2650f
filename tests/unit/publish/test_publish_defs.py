"""The publish domain in the code location: its assets, jobs, schedule and sensor, and the
automation that evaluates alerts after the rollups, anomalies or forecasts change."""

from __future__ import annotations

import dagster as dg

from hub_pipelines.definitions import defs
from hub_pipelines.defs.publish import publish_automation_sensor
from hub_pipelines.defs.publish.assets import ALERTS, ANOMALIES, FORECASTS, REPORT_KEYS
from hub_pipelines.defs.rollups.assets import HOURLY


def test_publish_is_part_of_the_code_location():
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert {ALERTS, *REPORT_KEYS} <= keys
    assert graph.get(ALERTS).parent_keys == {HOURLY, ANOMALIES, FORECASTS}
    for key in REPORT_KEYS:
        node = graph.get(key)
        assert node.partitions_def.partitions_defs[0].name == "date"
    assert defs.resolve_job_def("reports_job") and defs.resolve_job_def("alerts_job")
    assert defs.resolve_schedule_def("daily_reports").cron_schedule == "30 1 * * *"
    assert defs.resolve_sensor_def("publish_automation_sensor") is not None
    resources = defs.resources
    assert {"webhook_notifier", "slack_notifier", "email_notifier", "warehouse"} <= set(resources)


def _requested(instance, cursor=None):
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(ALERTS), cursor=cursor
    )
    return result.total_requested, result.cursor


def test_alerts_are_evaluated_after_rollups_anomalies_or_forecasts_change():
    assert publish_automation_sensor.asset_selection is not None
    with dg.instance_for_test() as instance:
        requested, cursor = _requested(instance)
        assert requested == 0
        instance.report_runless_asset_event(dg.AssetMaterialization(HOURLY, partition="2026-11-19-10:00"))
        requested, cursor = _requested(instance, cursor)
        assert requested == 1
        requested, cursor = _requested(instance, cursor)
        assert requested == 0  # handled
        instance.report_runless_asset_event(dg.AssetMaterialization(ANOMALIES, partition="2026-11-19-11:00"))
        requested, cursor = _requested(instance, cursor)
        assert requested == 1
        requested, cursor = _requested(instance, cursor)
        assert requested == 0
        instance.report_runless_asset_event(dg.AssetMaterialization(FORECASTS))
        assert _requested(instance, cursor)[0] == 1
