"""The correlation step of `hub demo`: correlate the generated window (one single-run range of the
daily `correlations` partitions, as a backfill runs it) and judge the incidents against the
generator's injected scenarios (DIR/scenarios.json) and labels.

    from hub_pipelines.defs.correlation.demo import run_correlations
    result = run_correlations(instance, start=..., end=..., scenarios_path=landing / "scenarios.json")
    for line in result.lines():
        click.echo(line)
"""

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from hub_ml.correlation import match_scenarios
from hub_pipelines import settings
from hub_pipelines.incidents.store import read_incidents
from hub_pipelines.warehouse import Warehouse


@dataclass
class CorrelationDemoResult:
    run_id: str
    seconds: float
    metadata: dict = field(default_factory=dict)
    incidents: list[dict] = field(default_factory=list)
    match: dict | None = None  # ScenarioMatch.summary() when the ground truth is known
    check_passed: bool = True

    def lines(self) -> list[str]:
        m = self.metadata
        out = [
            f"correlated {m.get('days', 0)} days through Dagster run {self.run_id[:8]} ({self.seconds:.1f}s):"
            f" {m.get('incidents', 0)} incidents, by root cause {m.get('incidents_by_root_cause', {})};"
            f" check incidents_are_explained {'passed' if self.check_passed else 'FAILED'}"
        ]
        if self.match:
            s = self.match
            out.append(
                f"   against the injected scenarios: {s['matched']} of {s['scenarios']} found (recall"
                f" {s['recall']:.2f}), precision {s['precision']:.2f}, root cause ranked first"
                f" {s['root_cause_accuracy']:.0%}; {s['explained_by_labels']} more incidents explained by"
                f" labelled anomalies"
            )
        for incident in sorted(self.incidents, key=lambda i: i["start"])[:6]:
            hypotheses = incident.get("hypotheses") or [{}]
            out.append(
                f"   {incident['start']:%m-%d %H:%M} {incident['tenant_id']} {incident['severity']:<8}"
                f" {incident['title']}; most likely: {hypotheses[0].get('description', '?')}"
            )
        out.append("   e.g. hub incidents --since 14d --details")
        return out


def run_correlations(
    instance: dg.DagsterInstance | None = None,
    *,
    start: datetime,
    end: datetime,
    scenarios_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    definitions: dg.Definitions | None = None,
    warehouse_url: str | None = None,
) -> CorrelationDemoResult:
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    if definitions is None:
        from hub_pipelines.definitions import defs as definitions
    instance = instance or dg.DagsterInstance.get()
    started = time.perf_counter()
    result = definitions.resolve_job_def("correlations_job").execute_in_process(
        instance=instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={
            ASSET_PARTITION_RANGE_START_TAG: start.strftime("%Y-%m-%d"),
            ASSET_PARTITION_RANGE_END_TAG: (end - timedelta(days=1)).strftime("%Y-%m-%d"),
        },
        raise_on_error=True,
    )
    metadata = {}
    for event in result.get_asset_materialization_events():
        metadata = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    out = CorrelationDemoResult(
        run_id=result.run_id,
        seconds=time.perf_counter() - started,
        metadata=metadata,
        check_passed=all(e.passed for e in result.get_asset_check_evaluations()),
    )
    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    try:
        out.incidents = read_incidents(warehouse, start=start, end=end)
    finally:
        warehouse.engine.dispose()
    if scenarios_path and Path(scenarios_path).exists():
        scenarios = json.loads(Path(scenarios_path).read_text())
        labels = (
            json.loads(Path(labels_path).read_text()) if labels_path and Path(labels_path).exists() else None
        )
        out.match = match_scenarios(out.incidents, scenarios, labels=labels).summary()
    return out
