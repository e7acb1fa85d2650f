"""The warehouse schema, one definition for DuckDB and PostgreSQL (SQLAlchemy Core).

Timestamps are `timestamptz` and every connection runs in UTC. JSON documents are stored as text
so the same DDL works on both engines; queries parse them where needed.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn

from hub_pipelines.events import contract

metadata = MetaData()

# The raw text and JSON documents dominate the bytes an ingest writes: zstd stores them several
# times smaller than DuckDB's own choice, in less time. Only those columns: the other identifiers
# keep the default, so scanning them does not decompress zstd (benchmarks/ingest.py: the warehouse
# file 274 MB against 445 MB with every column zstd).
_ZSTD = {"duckdb_compression": "zstd"}
# event_id is a random UUID: DuckDB's dictionary and FSST analysis finds nothing to share in it,
# yet costs a tenth of the insert (benchmarks/ingest.py: 3.4 against 3.7 us a row, the file 6%
# larger), and de-duplication scans it without decoding.
_UNCOMPRESSED = {"duckdb_compression": "uncompressed"}


@compiles(CreateColumn, "duckdb")
def _duckdb_column(element, compiler, **kw) -> str:
    """A column's DuckDB compression (`info["duckdb_compression"]`) in CREATE TABLE."""
    text = compiler.visit_create_column(element, **kw)
    method = element.element.info.get("duckdb_compression")
    return f"{text} USING COMPRESSION {method}" if text and method else text


def _ts(name: str, nullable: bool = True, **kw) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable, **kw)


# Validated, normalised events: one row per event_id (the idempotency key).
# On PostgreSQL event_id is the primary key and the time indexes exist (several writers may insert
# at once; B-trees serve range queries). The embedded DuckDB file has a single writer, which
# de-duplicates with an anti-join; an ART index on it would triple the cost of every ingest and
# DuckDB's zone maps already prune time ranges. The `no_duplicate_event_ids` check guards both.
events = Table(
    "events",
    metadata,
    Column("event_id", String(36), nullable=False, info=_UNCOMPRESSED),
    _ts("event_time", nullable=False),
    Column("tenant_id", String(128), nullable=False),
    Column("source_module", String(32), nullable=False),
    Column("event_type", String(16), nullable=False),
    Column("schema_version", String(32), nullable=False),
    Column("schema_major", Integer, nullable=False),
    Column("correlation_id", String(128)),
    Column("severity", String(16)),
    Column("environment", String(128)),
    Column("tags", Text, info=_ZSTD),
    Column("metric_name", String(64)),
    Column("metric_value", Double),
    Column("unit", String(16)),
    *(Column(dim, String(256)) for dim in contract.DIMENSIONS),
    Column("cost_type", String(32)),
    Column("cost_usd", Double),
    Column("threat_type", String(64)),
    Column("policy_id", String(128)),
    Column("policy_category", String(64)),
    Column("outcome", String(8)),
    Column("payload", Text, info=_ZSTD),
    Column("original", Text, nullable=False, info=_ZSTD),
    Column("batch_id", String(64), nullable=False),
    _ts("ingested_at", nullable=False),
)
for statement in (
    "ALTER TABLE events ADD PRIMARY KEY (event_id)",
    "CREATE INDEX IF NOT EXISTS ix_events_time ON events (event_time)",
    "CREATE INDEX IF NOT EXISTS ix_events_tenant_time ON events (tenant_id, event_time)",
):
    event.listen(events, "after_create", DDL(statement).execute_if(dialect="postgresql"))

# Records that failed validation, with their raw text and every reason; never silently dropped.
dead_letter_events = Table(
    "dead_letter_events",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("record_index", BigInteger, primary_key=True),
    Column("landing_key", Text, nullable=False),
    Column("event_id", String(256)),
    Column("tenant_id", String(256)),
    Column("source_module", String(256)),
    Column("primary_reason", String(64), nullable=False),
    Column("reasons", Text, nullable=False),
    Column("raw", Text, nullable=False, info=_ZSTD),
    _ts("received_at", nullable=False),
)
event.listen(
    dead_letter_events,
    "after_create",
    DDL("CREATE INDEX IF NOT EXISTS ix_dead_letters_received ON dead_letter_events (received_at)").execute_if(
        dialect="postgresql"
    ),
)

# One row per ingested batch (keyed by the SHA-256 of its bytes): a batch is ingested once however
# often a sensor sees it, and the row records what came of it.
ingest_ledger = Table(
    "ingest_ledger",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("landing_zone", String(256), nullable=False),
    Column("landing_key", Text, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("events_in", Integer, nullable=False),
    Column("stored", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("dead_lettered", Integer, nullable=False),
    _ts("min_event_time"),
    _ts("max_event_time"),
    Column("hours_touched", Text, nullable=False),  # JSON list of ISO hours that gained events
    Column("dead_by_reason", Text, nullable=False),  # JSON object: reason code -> count
    Column("run_id", String(64)),
    _ts("ingested_at", nullable=False),
)
event.listen(
    ingest_ledger,
    "after_create",
    DDL("CREATE INDEX IF NOT EXISTS ix_ledger_ingested ON ingest_ledger (ingested_at)").execute_if(
        dialect="postgresql"
    ),
)

# Latest registry metadata per asset, used to enrich events with asset name, version and owner.
asset_catalog = Table(
    "asset_catalog",
    metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("asset_id", String(128), primary_key=True),
    Column("asset_name", String(256), nullable=False),
    Column("asset_type", String(32), nullable=False),
    Column("version", String(64), nullable=False),
    Column("owner", String(256), nullable=False),
    Column("provider", String(128)),
    Column("lifecycle_stage", String(32)),
    Column("depends_on", Text),
    _ts("updated_at", nullable=False),
    Column("event_id", String(36), nullable=False),
)


# -- Rollups (issue 3) -------------------------------------------------------------------------
# Every rollup table has a bucket_start (the UTC hour or day) and dimension columns that may be
# NULL (an event without a model is rolled up under model NULL), so they have no primary key; a
# partition write deletes its time range and inserts it again in one transaction.
# hub_pipelines.warehouse.rollups says how each column is computed.

METRIC_ROLLUP_DIMENSIONS = (
    "tenant_id",
    "source_module",
    "metric_name",
    "model",
    "provider",
    "project",
    "environment",
    "region",
)
USAGE_ROLLUP_DIMENSIONS = ("tenant_id", "model", "provider", "project", "team", "environment", "region")
SECURITY_ROLLUP_DIMENSIONS = (
    "tenant_id",
    "source_module",
    "threat_type",
    "severity",
    "model",
    "project",
    "environment",
)
POLICY_ROLLUP_DIMENSIONS = (
    "tenant_id",
    "source_module",
    "policy_id",
    "policy_category",
    "model",
    "project",
    "team",
    "environment",
)


def _dimension_columns(names: tuple[str, ...]) -> list[Column]:
    return [Column(name, String(256 if name != "tenant_id" else 128)) for name in names]


def _rollup_table(name: str, dimensions: tuple[str, ...], *measures: Column) -> Table:
    table = Table(
        name,
        metadata,
        _ts("bucket_start", nullable=False),
        *_dimension_columns(dimensions),
        *measures,
    )
    # As for events: B-tree indexes on PostgreSQL only; DuckDB prunes time ranges with zone maps.
    for statement in (
        f"CREATE INDEX IF NOT EXISTS ix_{name}_bucket ON {name} (bucket_start)",
        f"CREATE INDEX IF NOT EXISTS ix_{name}_tenant_bucket ON {name} (tenant_id, bucket_start)",
    ):
        event.listen(table, "after_create", DDL(statement).execute_if(dialect="postgresql"))
    return table


def _metric_measures() -> list[Column]:
    return [
        Column("value_count", BigInteger, nullable=False),
        Column("value_sum", Double, nullable=False),
        Column("value_min", Double),
        Column("value_max", Double),
        Column("value_avg", Double),
        Column("value_stddev", Double),  # sample standard deviation; NULL for a single value
        Column("value_m2", Double),  # sum of squared deviations from the mean: merges exactly
        Column("p50", Double),
        Column("p95", Double),
        Column("p99", Double),
        # The values' DDSketch as text, "key:count,..." in key order (hub_pipelines.warehouse.sketch).
        Column("sketch", Text),
    ]


def _usage_measures() -> list[Column]:
    return [
        Column("requests", BigInteger, nullable=False),
        Column("errors", BigInteger, nullable=False),
        Column("tokens_input", Double, nullable=False),
        Column("tokens_output", Double, nullable=False),
        Column("tokens_total", Double, nullable=False),
        Column("spend_usd", Double, nullable=False),
        Column("cost_events", BigInteger, nullable=False),
        Column("error_rate", Double),
        Column("cost_per_request", Double),
        Column("cost_per_1k_tokens", Double),
        Column("throughput_rps", Double),
        Column("error_adjusted_throughput_rps", Double),
    ]


def _policy_measures() -> list[Column]:
    return [
        Column("evaluations", BigInteger, nullable=False),
        Column("passed", BigInteger, nullable=False),
        Column("failed", BigInteger, nullable=False),
        Column("compliance_rate", Double),
    ]


# Telemetry metrics (metric_value in its canonical unit) and the USD amount of cost events (as
# metric "cost_usd"): count, sum, min, max, avg, stddev and p50/p95/p99, and the values' sketch.
# Hourly percentiles are exact; daily ones come from the merged sketches (within
# hub_pipelines.warehouse.sketch.ALPHA).
rollup_metrics_hourly = _rollup_table("rollup_metrics_hourly", METRIC_ROLLUP_DIMENSIONS, *_metric_measures())
rollup_metrics_daily = _rollup_table("rollup_metrics_daily", METRIC_ROLLUP_DIMENSIONS, *_metric_measures())
# Requests, errors, tokens and spend by model, project and team, with the composite metrics.
rollup_usage_hourly = _rollup_table("rollup_usage_hourly", USAGE_ROLLUP_DIMENSIONS, *_usage_measures())
rollup_usage_daily = _rollup_table("rollup_usage_daily", USAGE_ROLLUP_DIMENSIONS, *_usage_measures())
# Security detections by threat type and severity.
rollup_security_hourly = _rollup_table(
    "rollup_security_hourly", SECURITY_ROLLUP_DIMENSIONS, Column("detections", BigInteger, nullable=False)
)
rollup_security_daily = _rollup_table(
    "rollup_security_daily", SECURITY_ROLLUP_DIMENSIONS, Column("detections", BigInteger, nullable=False)
)
# Policy evaluations by policy and category: pass, fail, compliance rate.
rollup_policy_hourly = _rollup_table("rollup_policy_hourly", POLICY_ROLLUP_DIMENSIONS, *_policy_measures())
rollup_policy_daily = _rollup_table("rollup_policy_daily", POLICY_ROLLUP_DIMENSIONS, *_policy_measures())

# One row per rolled-up hour or day: when it was written and from how many events. The query
# interface reads rollups for the buckets listed here and raw events for the rest; a check compares
# events_read with the events now in the hour to find hours that late events made stale.
rollup_partitions = Table(
    "rollup_partitions",
    metadata,
    Column("grain", String(8), primary_key=True),  # "hour" or "day"
    _ts("partition_start", primary_key=True),
    _ts("partition_end", nullable=False),
    Column("events_read", BigInteger, nullable=False),
    Column("rows_written", BigInteger, nullable=False),
    _ts("refreshed_at", nullable=False),
    Column("run_id", String(64)),
)


# Anomaly records, one per (series, hour), written by the `anomalies` asset from the champion
# detectors and read by alerts, correlation and reports.
anomalies = Table(
    "anomalies",
    metadata,
    Column("series_key", String(256), primary_key=True),  # e.g. tenant-01|latency_p95_ms|gpt-4o
    _ts("ts", nullable=False, primary_key=True),  # the hour scored
    Column("tenant_id", String(128), nullable=False),
    Column("metric", String(64), nullable=False),  # requests, error_rate, latency_p95_ms, spend_usd, ...
    Column("model", String(256)),
    Column("project", String(256)),
    Column("value", Double),
    Column("expected_low", Double),
    Column("expected_high", Double),
    Column("score", Double, nullable=False),  # 0..1
    Column("severity", String(16), nullable=False),  # low, medium, high, critical
    Column("confidence", Double, nullable=False),
    Column("detected_by", Text, nullable=False),  # JSON list of detector names
    Column("explanation", Text, nullable=False),
    Column("model_version", String(64)),
    _ts("scored_at", nullable=False),
)

# Forecasts with their bands, written by the `forecasts` asset, read by alerts and reports.
forecasts = Table(
    "forecasts",
    metadata,
    Column("series_key", String(256), primary_key=True),
    Column("horizon_days", Integer, primary_key=True),  # 7, 14, 30
    _ts("target_ts", nullable=False, primary_key=True),
    Column("scenario", String(64), primary_key=True),  # baseline, or a what-if's name
    Column("tenant_id", String(128), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("model", String(256)),
    Column("project", String(256)),
    Column("granularity", String(8), nullable=False),  # hour, day
    Column("forecast", Double, nullable=False),
    Column("lower", Double, nullable=False),
    Column("upper", Double, nullable=False),
    Column("level", Double, nullable=False),
    Column("model_name", String(32), nullable=False),  # ensemble, sarima, prophet, lstm, naive
    Column("model_version", String(64)),
    _ts("trained_at", nullable=False),
)


# -- Alerts (issue 6) ----------------------------------------------------------------------------
# hub_pipelines.alerts evaluates the rules file, keeps one row per alert (a rule firing for one
# group, e.g. one tenant and model, identified by its fingerprint) and records every delivery
# attempt. Times named *_at that come from an evaluation are its data time (`as_of`); created_at,
# updated_at and acknowledged_at are wall-clock.
alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(32), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # sha256 of rule id + labels
    Column("rule_id", String(64), nullable=False),
    Column("rule_type", String(32), nullable=False),
    Column("severity", String(16), nullable=False),  # info, warning, critical
    Column("tenant_id", String(128)),
    Column("labels", Text, nullable=False),  # JSON object: the group the alert is about
    Column("status", String(16), nullable=False),  # open, acknowledged, resolved
    Column("summary", Text, nullable=False),
    Column("details", Text, nullable=False),  # JSON object: what the rule saw
    Column("value", Double),
    Column("threshold", Double),
    _ts("opened_at", nullable=False),
    _ts("last_fired_at", nullable=False),
    _ts("resolved_at"),
    _ts("acknowledged_at"),
    Column("acknowledged_by", String(128)),
    _ts("last_notified_at"),  # data time of the last opened/reminder notification delivered
    Column("fired_count", Integer, nullable=False),
    Column("notifications_sent", Integer, nullable=False),
    Column("duplicates_suppressed", Integer, nullable=False),
    Column("silenced_suppressed", Integer, nullable=False),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
)
for statement in (
    "CREATE INDEX IF NOT EXISTS ix_alerts_fingerprint ON alerts (fingerprint)",
    "CREATE INDEX IF NOT EXISTS ix_alerts_status ON alerts (status)",
):
    event.listen(alerts, "after_create", DDL(statement).execute_if(dialect="postgresql"))

# One row per evaluation of the rules: what fired, what was opened, suppressed, resolved and sent.
alert_evaluations = Table(
    "alert_evaluations",
    metadata,
    Column("evaluation_id", String(32), primary_key=True),
    _ts("as_of", nullable=False),
    _ts("evaluated_at", nullable=False),
    Column("rules_file", Text, nullable=False),
    Column("rules_evaluated", Integer, nullable=False),
    Column("rule_errors", Text, nullable=False),  # JSON object: rule id -> error
    Column("firing", Integer, nullable=False),
    Column("opened", Integer, nullable=False),
    Column("reopened", Integer, nullable=False),
    Column("duplicates_suppressed", Integer, nullable=False),
    Column("silenced_suppressed", Integer, nullable=False),
    Column("resolved", Integer, nullable=False),
    Column("notifications_sent", Integer, nullable=False),
    Column("notifications_failed", Integer, nullable=False),
    Column("run_id", String(64)),
)

# Every delivery attempt of every notification (retries included); never a URL or a secret.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("attempt_id", String(32), primary_key=True),
    Column("alert_id", String(32), nullable=False),
    Column("evaluation_id", String(32)),
    Column("notification", String(16), nullable=False),  # opened, reminder, resolved
    Column("channel", String(64), nullable=False),
    Column("channel_type", String(16), nullable=False),  # webhook, slack, email
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered, retrying, failed, not_configured
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Double, nullable=False),
    _ts("attempted_at", nullable=False),
)
event.listen(
    alert_deliveries,
    "after_create",
    DDL("CREATE INDEX IF NOT EXISTS ix_alert_deliveries_alert ON alert_deliveries (alert_id)").execute_if(
        dialect="postgresql"
    ),
)

# Silences set from the command line (`hub alerts silence`): a rule (optionally one tenant) whose
# firings are recorded and counted but not sent until ends_at (wall-clock).
alert_silences = Table(
    "alert_silences",
    metadata,
    Column("silence_id", String(32), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("tenant_id", String(128)),
    _ts("starts_at", nullable=False),
    _ts("ends_at", nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_by", String(128)),
    _ts("created_at", nullable=False),
)


# -- Incidents (issue 7) -----------------------------------------------------------------------
# What the `correlations` asset found: one row per incident (a group of correlated signals, events
# and anomalies across modules, hub_ml.correlation), written per day partition (the day the
# incident started; a re-run replaces the partition's rows), and its members and evidence.
incidents = Table(
    "incidents",
    metadata,
    Column("incident_id", String(32), primary_key=True),  # inc-<16 hex>, stable across re-runs
    Column("tenant_id", String(128), nullable=False),
    _ts("start_time", nullable=False),
    _ts("end_time", nullable=False),
    _ts("partition_start", nullable=False),  # the UTC day whose run found it
    Column("kind", String(64), nullable=False),  # the top hypothesis's cause
    Column("title", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("severity", String(16), nullable=False),  # low, medium, high, critical
    Column("strength", Double, nullable=False),  # 0..1
    Column("confidence", Double, nullable=False),  # 0..1
    Column("impact_performance", Double, nullable=False),  # 0..1
    Column("impact_cost", Double, nullable=False),
    Column("impact_security", Double, nullable=False),
    Column("impact_business", Double, nullable=False),
    Column("cost_usd", Double, nullable=False),  # spend above baseline + wasted on failures and retries
    Column("impact", Text, nullable=False),  # JSON: the scores and the figures behind them
    Column("modules", Text, nullable=False),  # JSON list of source modules
    Column("correlation_kinds", Text, nullable=False),  # JSON list (hub_ml.correlation.CORRELATION_KINDS)
    Column("root_cause", String(64)),
    Column("root_cause_subject", Text),  # JSON object: model, project, ip, ...
    Column("root_cause_score", Double),
    Column("hypotheses", Text, nullable=False),  # JSON list, ranked, each with its evidence
    Column("correlations", Text, nullable=False),  # JSON list of the findings behind the incident
    Column("event_count", BigInteger, nullable=False),
    Column("anomaly_count", Integer, nullable=False),
    Column("engine_version", String(16), nullable=False),
    _ts("detected_at", nullable=False),
    Column("run_id", String(64)),
)
event.listen(
    incidents,
    "after_create",
    DDL(
        "CREATE INDEX IF NOT EXISTS ix_incidents_tenant_start ON incidents (tenant_id, start_time)"
    ).execute_if(dialect="postgresql"),
)

# An incident's members (events, anomalies, signals, security indicators, registry assets, causal
# chains) and the role each plays: cause, effect or evidence.
incident_members = Table(
    "incident_members",
    metadata,
    Column("incident_id", String(32), primary_key=True),
    Column("member_type", String(16), primary_key=True),  # event, anomaly, signal, indicator, asset, chain
    Column("member_id", String(256), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("role", String(16), nullable=False),  # cause, effect, evidence
    Column("correlation_kind", String(32), nullable=False),
    Column("source_module", String(32)),
    _ts("ts"),
    Column("detail", Text),  # JSON
)
