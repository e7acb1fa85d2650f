"""The `hub` command: demo, generate, ingest, query (later: detect, forecast)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from hub_pipelines import cli_alerts, cli_detect, cli_forecast, cli_incidents, cli_worker, settings


def _echo_json(data: dict) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.version_option(package_name="hub")
def main() -> None:
    """hub: analytics and forecasting for LLMs in production."""


def _parse_end(value: str | None) -> datetime:
    if value is None:
        # The start of the current UTC day: data ends "now" at day granularity, so two runs on the
        # same day give the same bytes. Pass --end for full reproducibility.
        now = datetime.now(UTC)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@main.command()
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write batches to."
)
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 3650))
@click.option("--tenants", default=2, show_default=True, type=click.IntRange(1, 100))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--end",
    default=None,
    help="End of the data (exclusive, on the hour), ISO-8601 UTC; default: start of today, UTC.",
)
@click.option(
    "--requests-per-hour",
    default=None,
    type=click.IntRange(1),
    help="Base request rate per tenant and model.",
)
@click.option("--corrupt-rate", default=0.0, show_default=True, type=click.FloatRange(0.0, 0.5))
@click.option("--format", "fmt", default="jsonl", show_default=True, type=click.Choice(["jsonl", "json"]))
@click.option("--gzip/--no-gzip", default=False, show_default=True)
@click.option("--no-anomalies", is_flag=True, help="Do not inject labelled anomalies.")
@click.option(
    "--scenarios", is_flag=True, help="Inject multi-module incidents (ground truth in scenarios.json)."
)
def generate(
    out_dir, days, tenants, seed, end, requests_per_hour, corrupt_rate, fmt, gzip, no_anomalies, scenarios
) -> None:
    """Write realistic LLM-traffic batch files (and labels.json) for all six source modules."""
    from hub_pipelines.generator import GeneratorConfig, simulate, write_batches

    kwargs = {"requests_per_hour": requests_per_hour} if requests_per_hour else {}
    config = GeneratorConfig(
        days=days, tenants=tenants, seed=seed, end=_parse_end(end), anomalies=not no_anomalies,
        corrupt_rate=corrupt_rate, scenarios=scenarios, **kwargs,
    )  # fmt: skip
    started = time.perf_counter()
    summary = write_batches(simulate(config), Path(out_dir), fmt=fmt, gzip=gzip)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    _echo_json(summary)


def _zones_and_keys(paths: tuple[str, ...]):
    from hub_pipelines.landing import LocalFolder
    from hub_pipelines.landing.base import is_batch_name

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            zone = LocalFolder(path)
            yield zone, [f.key for f in zone.list_pending()]
        elif path.is_file():
            if not is_batch_name(path.name):
                raise click.BadParameter(
                    f"{raw}: not a batch file (expected .jsonl, .json, .ndjson, optionally .gz)"
                )
            yield LocalFolder(path.parent), [path.name]
        else:
            raise click.BadParameter(f"{raw}: no such file or folder")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--warehouse-url", default=None, help="SQLAlchemy URL (default: HUB_WAREHOUSE_URL or the DuckDB file)."
)
@click.option(
    "--archive/--no-archive", default=False, show_default=True, help="Move ingested files to _archive/."
)
def ingest(paths, warehouse_url, archive) -> None:
    """Ingest batch files or folders, as the sensor does, and print a JSON summary."""
    from tqdm import tqdm

    from hub_pipelines.ingestion import ingest_files
    from hub_pipelines.warehouse import Warehouse
    from hub_pipelines.warehouse.event_writer import summarise

    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    warehouse.create_tables()
    work = list(_zones_and_keys(paths))
    outcomes = []
    with tqdm(total=sum(len(k) for _, k in work), unit="file", file=sys.stderr, disable=None) as bar:
        for zone, keys in work:
            report = ingest_files(warehouse, zone, keys, archive=archive, progress=lambda *_: bar.update(1))
            outcomes += report.outcomes
    summary = summarise(outcomes)
    summary.pop("hours_touched")
    _echo_json(summary)


def _split_names(values: tuple[str, ...]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _parse_filters(values: tuple[str, ...]) -> dict[str, object]:
    """KEY=VALUE pairs; a key given twice matches any of its values."""
    filters: dict[str, object] = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: use KEY=VALUE, e.g. model=gpt-4o", param_hint="--filter")
        key, value = item.split("=", 1)
        key = key.strip()
        if key in filters:
            previous = filters[key]
            filters[key] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            filters[key] = value
    return filters


@main.command()
@click.option(
    "--metric", default=None, help="Metric name, e.g. latency_ms, spend_usd, error_rate (--list-metrics)."
)
@click.option("--since", default=None, help="Relative range ending now: 30m, 24h, 7d, 2w (default 24h).")
@click.option("--start", default=None, help="Absolute start, ISO-8601 (UTC unless an offset is given).")
@click.option("--end", default=None, help="Absolute end (default now).")
@click.option("--bucket", default="1h", show_default=True, type=click.Choice(["1m", "5m", "1h", "1d"]))
@click.option(
    "--agg", default=None, help="count, sum, avg, min, max, p50, p95, p99 (default: the metric's own)."
)
@click.option("--group-by", "group_by", multiple=True, help="Dimensions, repeated or comma-separated.")
@click.option(
    "--filter", "filters", multiple=True, help="KEY=VALUE (repeat a key for any of several values)."
)
@click.option(
    "--order", default="time", show_default=True, type=click.Choice(["time", "-time", "value", "-value"])
)
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many rows.")
@click.option(
    "--exact/--approximate",
    default=True,
    show_default=True,
    help="Percentiles exactly, or from sketches (1%).",
)
@click.option("--source", default="auto", show_default=True, type=click.Choice(["auto", "rollups", "events"]))
@click.option(
    "--format", "fmt", default="table", show_default=True, type=click.Choice(["table", "json", "csv"])
)
@click.option(
    "--warehouse-url", default=None, help="SQLAlchemy URL (default: HUB_WAREHOUSE_URL or the DuckDB file)."
)
@click.option("--list-metrics", is_flag=True, help="List the metrics and their aggregations, then exit.")
def query(
    metric, since, start, end, bucket, agg, group_by, filters, order, limit, exact, source, fmt, warehouse_url,
    list_metrics,
) -> None:  # fmt: skip
    """Aggregate a metric over time buckets from the rollups (raw events where they cannot answer)."""
    from hub_pipelines.query import QueryError, describe
    from hub_pipelines.query import query as run_query
    from hub_pipelines.warehouse import Warehouse

    if list_metrics:
        click.echo(describe().to_string(index=False))
        return
    if not metric:
        raise click.UsageError("--metric is required (see --list-metrics)")
    warehouse = Warehouse(warehouse_url or settings.warehouse_url())
    warehouse.create_tables()
    try:
        frame = run_query(
            warehouse, metric, since=since, start=start, end=end, bucket=bucket, agg=agg,
            group_by=_split_names(group_by), filters=_parse_filters(filters), order=order, limit=limit,
            exact=exact, source=source,
        )  # fmt: skip
    except QueryError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        warehouse.engine.dispose()
    out = frame.assign(bucket_start=frame["bucket_start"].map(lambda t: t.isoformat()))
    if fmt == "json":
        records = out.astype(object).where(out.notna(), None).to_dict(orient="records")
        click.echo(json.dumps(records, indent=1))
    elif fmt == "csv":
        click.echo(out.to_csv(index=False), nl=False)
    elif out.empty:
        click.echo(f"no rows ({frame.attrs['start']} .. {frame.attrs['end']})")
    else:
        click.echo(out.to_string(index=False))


def prepare_dagster_home() -> Path:
    """DAGSTER_HOME under HUB_HOME with hub's dagster.yaml, unless the caller set one."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = settings.hub_home() / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shipped = Path(__file__).resolve().parents[1] / "dagster.yaml"
    target = home / "dagster.yaml"
    if shipped.exists():
        shutil.copyfile(shipped, target)
    elif not target.exists():
        target.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@main.command()
@click.option("--days", default=14, show_default=True, type=click.IntRange(1, 365))
@click.option("--tenants", default=2, show_default=True, type=click.IntRange(1, 20))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--corrupt-rate", default=0.02, show_default=True, type=click.FloatRange(0.0, 0.5))
@click.option(
    "--ml/--no-ml",
    default=True,
    show_default=True,
    help="Train the anomaly and forecast models and score the window (the longest step).",
)
def demo(days, tenants, seed, corrupt_rate, ml) -> None:
    """Generate data into the landing zone and run the whole pipeline through Dagster on the embedded
    defaults: ingest, rollups, models, anomalies and forecasts, incidents, alerts and reports."""
    import warnings

    import dagster as dg

    from hub_pipelines.generator import GeneratorConfig, simulate, write_batches

    warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy and friends, known
    home = settings.hub_home()
    dagster_home = prepare_dagster_home()
    landing = Path(os.environ.get("HUB_LANDING_URL") or settings.default_landing_dir())
    click.echo(f"hub demo: HUB_HOME={home}")
    # Scenarios: multi-module incidents for the correlation step to find (ground truth in scenarios.json).
    config = GeneratorConfig(
        days=days, tenants=tenants, seed=seed, end=_parse_end(None), corrupt_rate=corrupt_rate, scenarios=True
    )
    started = time.perf_counter()
    generated = write_batches(simulate(config), landing)
    click.echo(
        f"1. generated {days} days x {tenants} tenants of LLM traffic into {landing} ({time.perf_counter() - started:.1f}s)"
    )

    from hub_pipelines.definitions import defs

    instance = dg.DagsterInstance.get()
    started = time.perf_counter()
    result = defs.resolve_job_def("ingest_job").execute_in_process(instance=instance, raise_on_error=True)
    metadata = _materialization_metadata(result)
    ingested = metadata.get("validated_events", {})
    click.echo(
        f"2. ingested through Dagster run {result.run_id} ({time.perf_counter() - started:.1f}s): "
        f"{ingested.get('events_in')} events in, {ingested.get('stored')} stored, "
        f"{ingested.get('duplicates')} duplicates, {ingested.get('dead_lettered')} dead-lettered"
    )
    click.echo(
        f"   dead letters by reason: {metadata.get('dead_letter_events', {}).get('dead_lettered_by_reason')}"
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    verdicts = ", ".join(f"{name}={'passed' if ok else 'failed'}" for name, ok in sorted(checks.items()))
    click.echo(f"   checks: {verdicts}")
    click.echo(f"   generator expected: {json.dumps(generated.get('expected', {}))}")
    _demo_rollups(defs, instance, config.start_utc, config.end_utc)
    if ml:
        import logging

        from hub_pipelines.defs.ml.demo import run_ml

        # MLflow notes every registration and pickled model at INFO/WARNING; the step's summary says it.
        # The variable reaches MLflow wherever it is first imported (step processes included).
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        logging.getLogger("mlflow").setLevel(logging.ERROR)

        click.echo("5. models trained, anomalies scored and forecasts stored through Dagster:")
        learned = run_ml(
            instance,
            labels_path=landing / "labels.json",
            scenarios_path=landing / "scenarios.json",
            start=config.start_utc,
            end=config.end_utc,
            definitions=defs,
        )
        for line in learned.lines():
            click.echo(f"   {line}")
    else:
        click.echo("5. models: skipped (--no-ml)")

    from hub_pipelines.defs.correlation.demo import run_correlations

    correlated = run_correlations(
        instance,
        start=config.start_utc,
        end=config.end_utc,
        scenarios_path=landing / "scenarios.json",
        labels_path=landing / "labels.json",
        definitions=defs,
    )
    lines = correlated.lines()
    click.echo(f"6. {lines[0]}")
    for line in lines[1:]:
        click.echo(line)

    from hub_pipelines.defs.publish.demo import run_publish

    started = time.perf_counter()
    # The rules replayed hour by hour over the last three days, as the alerts asset would have run
    # live, so that the alerts of the generated history open, repeat and resolve.
    published = run_publish(instance, definitions=defs, replay_hours=72)
    click.echo(
        f"7. alerts evaluated and reports written through Dagster ({time.perf_counter() - started:.1f}s):"
    )
    for line in published.lines():
        click.echo(f"   {line}")
    click.echo("")
    click.echo(f"Warehouse: {settings.warehouse_url()}")
    click.echo(f"Reports: {published.reports_dir}")
    if ml:
        click.echo(f"MLflow: {learned.tracking_uri} (mlflow ui --backend-store-uri {learned.tracking_uri})")
    click.echo(f"Dagster instance: {dagster_home} (open the UI with `make dev`)")


def _demo_rollups(defs, instance, start: datetime, end: datetime) -> None:
    """Step 3 of the demo: the generated window rolled up through Dagster (one single-run range for the
    hours, one for the days, as a backfill runs them), then a few answers of the query interface."""
    from datetime import timedelta

    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from hub_pipelines.query import query as run_query
    from hub_pipelines.warehouse import Warehouse

    started = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    hours = defs.resolve_job_def("hourly_rollups_job").execute_in_process(
        instance=instance,
        run_config=quiet,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: start.strftime("%Y-%m-%d-%H:%M"),
            ASSET_PARTITION_RANGE_END_TAG: (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M"),
        },
    )
    days = defs.resolve_job_def("daily_rollups_job").execute_in_process(
        instance=instance,
        run_config=quiet,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: start.strftime("%Y-%m-%d"),
            ASSET_PARTITION_RANGE_END_TAG: (end - timedelta(days=1)).strftime("%Y-%m-%d"),
        },
    )
    hourly = _materialization_metadata(hours).get("hourly_rollups", {})
    checks = [e.passed for r in (hours, days) for e in r.get_asset_check_evaluations()]
    click.echo(
        f"3. rolled up {hourly.get('hours')} hours and {_materialization_metadata(days).get('daily_rollups', {}).get('days')}"
        f" days through Dagster runs {hours.run_id[:8]} and {days.run_id[:8]} ({time.perf_counter() - started:.1f}s):"
        f" {hourly.get('rows_rollup_metrics_hourly')} hourly metric rows from {hourly.get('events_read')} events;"
        f" checks {'passed' if all(checks) else 'FAILED'}"
    )
    warehouse = Warehouse(settings.warehouse_url())
    last_day = {"start": end - timedelta(days=1), "end": end}
    answers = [
        (
            "p95 latency (ms) by model, last day",
            "latency_ms",
            dict(bucket="1d", agg="p95", group_by=["model"]),
        ),
        ("spend (USD) by project, last day", "spend_usd", dict(bucket="1d", group_by=["project"])),
        ("error rate by model, last day", "error_rate", dict(bucket="1d", group_by=["model"])),
        (
            "security detections by severity, whole window",
            "threats",
            dict(bucket="1d", group_by=["severity"]),
        ),
        (
            "policy compliance rate by category, last day",
            "compliance_rate",
            dict(bucket="1d", group_by=["category"]),
        ),
    ]
    click.echo("4. the query interface (`hub query`, hub_pipelines.query.query):")
    for title, metric, kwargs in answers:
        if "whole window" in title:
            frame = run_query(warehouse, metric, start=start, end=end, **kwargs)
            totals = (
                frame.groupby(kwargs["group_by"], dropna=False)["value"].sum().sort_values(ascending=False)
            )
            rows = ", ".join(f"{k}={v:.0f}" for k, v in totals.items())
        else:
            frame = run_query(warehouse, metric, order="-value", limit=5, **last_day, **kwargs)
            column = "policy_category" if kwargs["group_by"][0] == "category" else kwargs["group_by"][0]
            rows = ", ".join(f"{r[column]}={r['value']:.4g}" for _, r in frame.iterrows())
        click.echo(f"   {title}: {rows}  [read from {', '.join(sorted(frame.attrs['sources']))}]")
    warehouse.engine.dispose()
    click.echo(
        "   e.g. hub query --metric latency_ms --since 7d --bucket 1h --agg p95 --group-by model --format csv"
    )


def _materialization_metadata(result) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    return out


main.add_command(cli_worker.worker)
main.add_command(cli_alerts.alerts)
main.add_command(cli_incidents.incidents)
main.add_command(cli_detect.detect)
main.add_command(cli_forecast.forecast)

if __name__ == "__main__":
    main()
