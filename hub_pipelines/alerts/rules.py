"""Alert rules: the YAML file, its validation, and where it is found.

The file (hub_pipelines/alerts/default_rules.yaml is the shipped example; HUB_ALERT_RULES names
another) has four top-level keys:

```yaml
version: 1
defaults:                 # applied to every rule that does not say otherwise
  dedup_window: 6h        # a firing of an alert notified less than this long ago is a duplicate
  channels: [ops-webhook] # where notifications go
channels:                 # delivery channels; URLs and secrets come from environment variables
  - {name: ops-webhook, type: webhook}                       # HUB_ALERT_WEBHOOK_URL
  - {name: ops-slack, type: slack}                           # HUB_ALERT_SLACK_WEBHOOK_URL
  - {name: oncall-email, type: email, to: [oncall@example.com]}  # HUB_SMTP_*
rules:
  - id: p95-latency-high          # lower-case letters, digits, - _ .
    type: threshold               # threshold | rate_of_change | anomaly | predictive | composite
    severity: warning             # info | warning | critical
    scope: {tenant: tenant-01, source: llm-observatory, dimensions: {model: [gpt-4o, gpt-4o-mini]}}
    metric: latency_ms            # any metric of the query interface (hub query --list-metrics)
    agg: p95
    op: ">"
    value: 4000
    for: 2h                       # every bucket of the last 2 hours breaches
    group_by: [model]             # one alert per tenant and model (tenant_id is always a key)
```

Each rule type's own keys are documented on its class below. `load_rules(path)` returns a
`RuleSet` or raises `RuleFileError` whose message names the file, the rule (by id and position)
and the key at fault, and says what is allowed.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hub_pipelines.query.catalogue import AGGREGATIONS, ALIASES, BUCKETS, DERIVED, DIMENSIONS, VALUE_METRICS

RULES_ENV = "HUB_ALERT_RULES"
DEFAULT_RULES_RESOURCE = "default_rules.yaml"

SEVERITIES = ("info", "warning", "critical")
ANOMALY_SEVERITIES = ("low", "medium", "high", "critical")  # the anomalies table's vocabulary
RULE_TYPES = ("threshold", "rate_of_change", "anomaly", "predictive", "composite")
CHANNEL_TYPES = ("webhook", "slack", "email")
# Columns of the anomalies and forecasts tables a rule may be scoped by (besides the tenant).
ML_DIMENSIONS = ("model", "project")

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RuleFileError(ValueError):
    """The rules file cannot be used; the message says where and why."""


def parse_duration(value: Any) -> timedelta:
    """'90s', '30m', '2h', '7d', '1w' (or a timedelta, or a number of seconds) -> timedelta."""
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        duration = timedelta(seconds=float(value))
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; use a number and a unit: 30m, 2h, 7d, 1w")
        duration = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if duration <= timedelta(0):
        raise ValueError(f"{value!r}: a duration must be positive")
    return duration


def format_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _one_or_many(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list matches nothing; leave the key out to match everything")
        return [str(v) for v in value]
    return [str(value)]


OneOrMany = Annotated[list[str] | None, BeforeValidator(_one_or_many)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Scope(_Strict):
    """Which data a rule looks at. Every key is optional; a key left out matches everything.

    tenant: a tenant id or a list; source: a source module or a list (telemetry-based rules only);
    dimensions: {name: value | [values] | null}, null meaning "not set" (e.g. a tenant-level
    forecast series has model null)."""

    tenant: OneOrMany = None
    source: OneOrMany = None
    dimensions: dict[str, str | list[str] | None] = Field(default_factory=dict)

    @field_validator("dimensions")
    @classmethod
    def _dimension_values(cls, value: dict) -> dict:
        for name, item in value.items():
            if isinstance(item, list) and not item:
                raise ValueError(f"dimensions.{name}: an empty list matches nothing")
        return value

    def query_filters(self) -> dict[str, Any]:
        """The scope as filters of the query interface."""
        filters: dict[str, Any] = {}
        if self.tenant is not None:
            filters["tenant_id"] = self.tenant if len(self.tenant) > 1 else self.tenant[0]
        if self.source is not None:
            filters["source_module"] = self.source if len(self.source) > 1 else self.source[0]
        for name, value in self.dimensions.items():
            filters[ALIASES.get(name, name)] = value
        return filters

    def matches_tenant(self, tenant_id: str | None) -> bool:
        return self.tenant is None or tenant_id in self.tenant


class RuleBase(_Strict):
    id: str
    name: str | None = None
    description: str = ""
    severity: Literal["info", "warning", "critical"] = "warning"
    scope: Scope = Field(default_factory=Scope)
    # Where notifications go (channel names); unset: defaults.channels.
    channels: list[str] | None = None
    # A firing of an alert notified less than this long ago is counted, not sent; unset: defaults.
    dedup_window: Duration | None = None
    # Silenced rules still open and resolve alerts, but their notifications are counted, not sent.
    silenced: bool = False
    silenced_until: datetime | None = None
    # False: the rule only feeds composite rules and never opens alerts of its own.
    standalone: bool = True
    notify_resolved: bool = True
    # A message template: {tenant_id}, {value}, {threshold}, any label or detail name.
    summary: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                f"{value!r} is not a rule id: use 1-64 lower-case letters, digits, '-', '_' or '.',"
                " starting with a letter or digit"
            )
        return value

    @field_validator("silenced_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @property
    def title(self) -> str:
        return self.name or self.id

    def is_silenced(self, now: datetime) -> bool:
        return self.silenced or (self.silenced_until is not None and now < self.silenced_until)


def _check_metric(metric: str, agg: str | None) -> None:
    derived = DERIVED.get(metric)
    if derived is None and metric not in VALUE_METRICS:
        known = ", ".join([*VALUE_METRICS, *DERIVED])
        raise ValueError(f"unknown metric {metric!r}; allowed: {known}")
    allowed = derived.aggregations if derived else AGGREGATIONS
    if agg is not None and agg not in allowed:
        raise ValueError(f"agg {agg!r} is not allowed for metric {metric!r}; allowed: {', '.join(allowed)}")


def _check_dimensions(names, allowed, where: str) -> None:
    for name in names:
        canonical = ALIASES.get(name, name)
        if canonical not in allowed:
            raise ValueError(f"{where}: unknown dimension {name!r}; allowed: {', '.join(allowed)}")


class _QueryRule(RuleBase):
    """Shared by the rules that read the query interface (threshold, rate_of_change)."""

    metric: str
    agg: str | None = None
    bucket: Literal["1m", "5m", "1h", "1d"] = "1h"
    # One alert per group: tenant_id is always a key; add dimensions such as model or project.
    group_by: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _query_names(self):
        _check_metric(self.metric, self.agg)
        allowed = tuple(d for d in DIMENSIONS if d != "tenant_id")
        _check_dimensions(self.scope.dimensions, allowed, "scope.dimensions")
        _check_dimensions(self.group_by, allowed, "group_by")
        return self

    @property
    def keys(self) -> list[str]:
        """The group-by dimensions, tenant first (canonical names)."""
        out = ["tenant_id"]
        for name in self.group_by:
            canonical = ALIASES.get(name, name)
            if canonical not in out:
                out.append(canonical)
        return out

    @property
    def bucket_delta(self) -> timedelta:
        return timedelta(seconds=BUCKETS[self.bucket])

    @property
    def is_counter(self) -> bool:
        derived = DERIVED.get(self.metric)
        return derived is not None and derived.kind == "counter"


class ThresholdRule(_QueryRule):
    """The metric, per bucket and group, compared with `value` by `op` in every bucket of the
    last `for` (a multiple of `bucket`). Counters count a bucket without events as 0; other metrics
    have no value there, so the condition does not hold."""

    type: Literal["threshold"]
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float
    for_: Duration = Field(alias="for")

    @model_validator(mode="after")
    def _duration(self):
        if self.for_ % self.bucket_delta:
            raise ValueError(
                f"for ({format_duration(self.for_)}) must be a multiple of bucket ({self.bucket})"
            )
        return self


class RateOfChangeRule(_QueryRule):
    """The last complete bucket against the bucket `compare_to` earlier (default: the bucket
    before; 1d or 7d compare with the same hour a day or a week ago). Fires when the relative
    change is at least `change_pct` percent in `direction` (up, down or either), and the earlier
    value's magnitude is above `min_base` (default 0: a change from nothing is not a rate)."""

    type: Literal["rate_of_change"]
    change_pct: float = Field(gt=0)
    direction: Literal["up", "down", "either"] = "up"
    compare_to: Duration | None = None
    min_base: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _offset(self):
        if self.compare_to is not None and self.compare_to % self.bucket_delta:
            raise ValueError(
                f"compare_to ({format_duration(self.compare_to)}) must be a multiple of bucket ({self.bucket})"
            )
        return self

    @property
    def offset(self) -> timedelta:
        return self.compare_to or self.bucket_delta


class AnomalyRule(RuleBase):
    """Rows of the anomalies table scored in the last `lookback` with severity at or above
    `min_severity` (low < medium < high < critical) and score at least `min_score`; one alert per
    series (tenant, metric, model, project). `metrics` limits the anomaly metrics (requests,
    error_rate, latency_p95_ms, spend_usd, ...); scope.dimensions may name model and project."""

    type: Literal["anomaly"]
    min_severity: Literal["low", "medium", "high", "critical"] = "high"
    lookback: Duration = Field(default=timedelta(hours=1))
    metrics: OneOrMany = None
    min_score: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _scope(self):
        if self.scope.source is not None:
            raise ValueError(
                "scope.source: anomaly rules cannot be scoped by source (anomalies are per series)"
            )
        _check_dimensions(self.scope.dimensions, ML_DIMENSIONS, "scope.dimensions")
        return self


class PredictiveRule(RuleBase):
    """The newest forecast of each series of `metric` (forecasts table, `scenario`) crossing
    `limit` within `within_days`.

    mode level (capacity): some forecast point (`band`: forecast, upper or lower) reaches the
    limit. mode cumulative (budget exhaustion): the actual total since the start of the `period`
    (month, week, day; none: since as-of) plus the forecast total from now on reaches the limit
    before the period ends and within `within_days`. The actual total is read from the query
    interface's `actual_metric` (default: `metric`, which must then be one of its counters)."""

    type: Literal["predictive"]
    metric: str
    limit: float
    within_days: float = Field(gt=0)
    mode: Literal["level", "cumulative"] = "level"
    period: Literal["month", "week", "day", "none"] = "month"
    band: Literal["forecast", "upper", "lower"] = "forecast"
    scenario: str = "baseline"
    actual_metric: str | None = None

    @model_validator(mode="after")
    def _predictive(self):
        if self.scope.source is not None:
            raise ValueError(
                "scope.source: predictive rules cannot be scoped by source (forecasts are per series)"
            )
        _check_dimensions(self.scope.dimensions, ML_DIMENSIONS, "scope.dimensions")
        if self.mode == "cumulative":
            metric = self.actual_metric or self.metric
            derived = DERIVED.get(metric)
            if derived is None or derived.kind != "counter":
                counters = ", ".join(m.name for m in DERIVED.values() if m.kind == "counter")
                raise ValueError(
                    f"mode cumulative adds actuals to the forecast: actual_metric {metric!r} must be a"
                    f" counter of the query interface ({counters}); set actual_metric"
                )
        return self

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=self.within_days)


class CompositeRule(RuleBase):
    """`operator` and/or over other rules (`rules`, by id), matched on `match_on` (default
    tenant_id): with and, a group fires when every rule fires for it; with or, when any does."""

    type: Literal["composite"]
    operator: Literal["and", "or"]
    rules: list[str] = Field(min_length=2)
    match_on: list[str] = Field(default_factory=lambda: ["tenant_id"])

    @field_validator("match_on")
    @classmethod
    def _match_on(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("match_on needs at least one label, e.g. [tenant_id]")
        return [ALIASES.get(v, v) for v in value]


Rule = Annotated[
    ThresholdRule | RateOfChangeRule | AnomalyRule | PredictiveRule | CompositeRule,
    Field(discriminator="type"),
]


class Channel(_Strict):
    """A delivery channel. webhook: JSON POST to the URL in `url_env` (default
    HUB_ALERT_WEBHOOK_URL); slack: a Slack-compatible incoming webhook (`url_env`, default
    HUB_ALERT_SLACK_WEBHOOK_URL); email: SMTP (HUB_SMTP_HOST, HUB_SMTP_PORT, HUB_SMTP_USERNAME,
    HUB_SMTP_PASSWORD, HUB_SMTP_FROM, HUB_SMTP_STARTTLS) to the addresses in `to`."""

    name: str
    type: Literal["webhook", "slack", "email"]
    url_env: str | None = None
    to: list[str] = Field(default_factory=list)
    subject_prefix: str = "[hub]"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(
                f"{value!r} is not a channel name: use lower-case letters, digits, '-', '_' or '.'"
            )
        return value

    @field_validator("url_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                f"url_env names an environment variable (e.g. HUB_ALERT_WEBHOOK_URL), not a URL: {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _fields(self):
        if self.type == "email":
            if not self.to:
                raise ValueError("an email channel needs `to`: a list of addresses")
            if self.url_env is not None:
                raise ValueError("url_env is for webhook and slack channels; email reads HUB_SMTP_*")
            for address in self.to:
                if "@" not in address:
                    raise ValueError(f"to: {address!r} is not an email address")
        elif self.to:
            raise ValueError(f"`to` is for email channels, not {self.type}")
        return self


class Defaults(_Strict):
    dedup_window: Duration = Field(default=timedelta(hours=6))
    channels: list[str] = Field(default_factory=list)


class RuleSet(_Strict):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    channels: list[Channel] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    # Where the rules were read from (set by parse_rules; not a key of the file).
    _source: str = PrivateAttr(default="<memory>")

    @property
    def source(self) -> str:
        return self._source

    @model_validator(mode="after")
    def _references(self):
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice; ids must be unique")
            seen.add(rule.id)
        names = [c.name for c in self.channels]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"channel names used twice: {', '.join(duplicated)}")
        known = set(names)
        for name in self.defaults.channels:
            if name not in known:
                raise ValueError(f"defaults.channels: unknown channel {name!r}; defined: {sorted(known)}")
        by_id = {r.id: r for r in self.rules}
        for rule in self.rules:
            for name in rule.channels or []:
                if name not in known:
                    raise ValueError(
                        f"rule {rule.id!r}: unknown channel {name!r}; defined: {sorted(known) or 'none'}"
                    )
            if isinstance(rule, CompositeRule):
                for ref in rule.rules:
                    if ref not in by_id:
                        raise ValueError(f"rule {rule.id!r}: composite refers to unknown rule {ref!r}")
                    if ref == rule.id:
                        raise ValueError(f"rule {rule.id!r}: a composite cannot refer to itself")
        for rule in self.rules:
            _check_cycle(rule.id, by_id, ())
        return self

    def rule(self, rule_id: str):
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def channel(self, name: str) -> Channel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    def channels_for(self, rule: RuleBase) -> list[Channel]:
        names = rule.channels if rule.channels is not None else self.defaults.channels
        return [self.channel(n) for n in names]

    def dedup_window(self, rule: RuleBase) -> timedelta:
        return rule.dedup_window or self.defaults.dedup_window


def _check_cycle(rule_id: str, by_id: dict, path: tuple[str, ...]) -> None:
    if rule_id in path:
        raise ValueError(f"composite rules refer to each other in a cycle: {' -> '.join([*path, rule_id])}")
    rule = by_id[rule_id]
    if isinstance(rule, CompositeRule):
        for ref in rule.rules:
            _check_cycle(ref, by_id, (*path, rule_id))


# -- loading -----------------------------------------------------------------------------------


def default_rules_path() -> Path:
    """The rules file shipped in the package."""
    return Path(str(resources.files("hub_pipelines.alerts").joinpath(DEFAULT_RULES_RESOURCE)))


def rules_path(path: str | os.PathLike[str] | None = None) -> Path:
    """`path`, else HUB_ALERT_RULES, else the shipped default (read when called, never at import)."""
    chosen = path or os.environ.get(RULES_ENV)
    return Path(chosen) if chosen else default_rules_path()


def load_rules(path: str | os.PathLike[str] | None = None) -> RuleSet:
    """Read and validate a rules file (see the module docstring); RuleFileError says what is wrong."""
    where = rules_path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleFileError(f"alert rules file {where}: cannot be read ({exc.strerror or exc})") from exc
    return parse_rules(text, source=str(where))


def parse_rules(text: str, source: str = "<string>") -> RuleSet:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleFileError(f"alert rules file {source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RuleFileError(
            f"alert rules file {source}: the top level must be a mapping with version, defaults, channels, rules"
        )
    try:
        ruleset = RuleSet.model_validate(raw)
    except ValidationError as exc:
        raise RuleFileError(_describe(exc, raw, source)) from None
    ruleset._source = source
    return ruleset


def _describe(exc: ValidationError, raw: dict, source: str) -> str:
    lines = [f"alert rules file {source}: {exc.error_count()} problem(s)"]
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        where = _where(loc, raw)
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "union_tag_invalid":
            message = (
                f"unknown rule type {error.get('input', {}).get('type')!r}; allowed: {', '.join(RULE_TYPES)}"
            )
        elif error["type"] == "union_tag_not_found":
            message = f"missing `type`; one of {', '.join(RULE_TYPES)}"
        elif error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif error["type"] == "missing":
            message = f"missing required key {loc[-1]!r}"
        lines.append(f"  - {where}: {message}")
    return "\n".join(lines)


def _where(loc: list, raw: dict) -> str:
    """A readable location: rules[2] (id 'x') > scope > tenant."""
    parts: list[str] = []
    i = 0
    while i < len(loc):
        item = loc[i]
        if item in ("rules", "channels") and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            index = loc[i + 1]
            entries = raw.get(item) if isinstance(raw.get(item), list) else []
            entry = entries[index] if index < len(entries) and isinstance(entries[index], dict) else {}
            label = entry.get("id") if item == "rules" else entry.get("name")
            parts.append(f"{item}[{index}]" + (f" ({label!r})" if label else ""))
            i += 2
            if item == "rules" and i < len(loc) and loc[i] in RULE_TYPES:
                i += 1  # the discriminator's tag, not a key of the file
            continue
        parts.append("for" if item == "for_" else str(item))
        i += 1
    return " > ".join(parts) if parts else "top level"
