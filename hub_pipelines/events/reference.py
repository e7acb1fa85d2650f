"""The contract applied one record at a time, with `jsonschema` and plain Python.

This is the readable statement of what a valid event is and how it is normalised. It is the
oracle the compiled SQL validator (`sql_validator`) is tested against, and the naive baseline of
benchmarks/ingest. It is far too slow for production batches (about 100 microseconds a record).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jsonschema
from jsonschema import validators

from hub_pipelines.events import contract

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_EPOCH_MILLIS = 32503680000000  # year 3000


@dataclass
class Judged:
    """One record's verdict: reasons (empty when valid) and the normalised row."""

    rec_idx: int
    raw_text: str
    reasons: list[contract.Reason] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def is_valid(self) -> bool:
        return not self.reasons


def _ecma_pattern(validator, pattern, instance, schema):
    """JSON Schema patterns are ECMA-262 regexes, where `$` matches only at the very end; Python's
    `re` also matches before a final newline, so the anchor is made strict."""
    if not isinstance(instance, str):
        return
    strict = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if not re.search(strict, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@cache
def _validator() -> jsonschema.Validator:
    cls = validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
    return cls(contract.event_schema())


def _json_type_name(value: Any) -> str:
    """DuckDB's name for a JSON value's type, lower-cased (as in the SQL validator's messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint" if value < 2**63 else "ubigint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "varchar"
    return "array" if isinstance(value, list) else "object"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_record(raw_text: str) -> Any:
    """Strict JSON: NaN and Infinity are not JSON, whatever Python's json module allows."""
    return json.loads(raw_text, parse_constant=_reject_constant)


def schema_major(record: dict[str, Any]) -> int | None:
    version = record.get("schema_version")
    if not isinstance(version, str):
        return None
    pattern = contract.event_schema()["properties"]["schema_version"]["pattern"]
    if not re.search(pattern[:-1] + r"\Z", version):
        return None
    return int(version.split(".")[0])


def _rename(obj: dict[str, Any], names: dict[str, str]) -> None:
    """Move old names to new ones, unless the new name is already there (then the old stays and
    is judged as it is)."""
    for old, new in names.items():
        if old in obj and new not in obj:
            obj[new] = obj.pop(old)


def to_canonical(record: dict[str, Any], major: int | None) -> dict[str, Any]:
    """The record with legacy and source-specific names mapped to the canonical envelope."""
    mappings = contract.source_mappings()
    legacy = mappings["legacy"]
    out = dict(record)
    if isinstance(out.get("payload"), dict):
        out["payload"] = dict(out["payload"])
    is_legacy = major in legacy["majors"]
    if is_legacy:
        _rename(out, legacy["envelope"])
    etype = out.get("event_type") if isinstance(out.get("event_type"), str) else None
    source = out.get("source_module") if isinstance(out.get("source_module"), str) else None
    payload = out.get("payload") if isinstance(out.get("payload"), dict) else None
    if is_legacy and payload is not None and etype in legacy["payload"]:
        _rename(payload, legacy["payload"][etype])
    spec = mappings["sources"].get(source)
    if spec:
        _rename(out, spec["envelope"])
        if payload is not None and etype in spec["payload"]:
            _rename(payload, spec["payload"][etype])
        for target, values in spec.get("values", {}).items():
            target_type, name = target.split(".")
            if payload is not None and etype == target_type and isinstance(payload.get(name), str):
                payload[name] = values.get(payload[name], payload[name])
    millis = out.get("timestamp")
    if is_legacy and _is_number(millis) and 0 <= millis <= _MAX_EPOCH_MILLIS:
        moment = _EPOCH + timedelta(microseconds=round(millis * 1000))
        out["timestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    return out


def parse_timestamp(value: Any) -> datetime | None:
    """The event time in UTC, when the text has the contract's shape and is a real moment."""
    if not isinstance(value, str):
        return None
    pattern = contract.event_schema()["properties"]["timestamp"]["pattern"]
    if not re.search(pattern[:-1] + r"\Z", value):
        return None
    text = value.replace(" ", "T", 1)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC)


def schema_reasons(canonical: dict[str, Any]) -> list[contract.Reason]:
    """jsonschema's errors as hub's reason codes."""
    reasons: list[contract.Reason] = []
    properties = contract.event_schema()["properties"]
    for error in _validator().iter_errors(canonical):
        path = ".".join(str(p) for p in error.absolute_path)
        kind = error.validator
        if kind == "required":
            for name in error.validator_value:
                if isinstance(error.instance, dict) and name not in error.instance:
                    child = f"{path}.{name}" if path else name
                    reasons.append(
                        contract.Reason("missing_field", child, f"required field {child} is missing")
                    )
        elif kind == "type":
            reasons.append(contract.Reason("wrong_type", path, f"field {path} has the wrong type"))
        elif kind == "additionalProperties" and path == "":
            for name in sorted(set(error.instance) - set(properties)):
                reasons.append(contract.Reason("unexpected_field", name, f"unexpected field {name}"))
        else:
            reasons.append(contract.Reason("invalid_value", path, f"field {path} has an invalid value"))
    return reasons


def _unit(value: Any) -> tuple[str, float] | None:
    return contract.UNIT_FACTORS.get(value.lower()) if isinstance(value, str) else None


def business_reasons(
    canonical: dict[str, Any],
    event_time: datetime | None,
    received_at: datetime,
    batch_newest: datetime | None,
) -> tuple[list[contract.Reason], dict[str, Any]]:
    """The rules beyond the schema, and the normalised values they compute."""
    reasons: list[contract.Reason] = []
    normal: dict[str, Any] = {}
    ts = canonical.get("timestamp")
    if parse_timestamp_shape(ts) and event_time is None:
        reasons.append(
            contract.Reason("invalid_value", "timestamp", f"timestamp {ts} is not a valid date and time")
        )
    if event_time is not None:
        if event_time > received_at + contract.MAX_FUTURE_SKEW:
            reasons.append(contract.Reason("timestamp_in_future", "timestamp", "timestamp is in the future"))
        if event_time < (batch_newest or received_at) - contract.MAX_EVENT_AGE:
            reasons.append(contract.Reason("timestamp_too_old", "timestamp", "timestamp is too old"))
    etype = canonical.get("event_type")
    payload = canonical.get("payload") if isinstance(canonical.get("payload"), dict) else {}
    if etype == "telemetry":
        value = payload.get("metric_value") if _is_number(payload.get("metric_value")) else None
        unit = payload.get("unit") if isinstance(payload.get("unit"), str) else None
        known = _unit(unit)
        name = payload.get("metric_name") if isinstance(payload.get("metric_name"), str) else None
        expected = contract.METRIC_UNITS.get(name) if name else None
        if value is not None and value < 0:
            reasons.append(contract.Reason("negative_metric_value", "payload.metric_value", "negative"))
        if unit is not None and known is None:
            reasons.append(
                contract.Reason("unknown_unit", "payload.unit", f"unit {unit} is not a known unit")
            )
        if known is not None and expected is not None and known[0] != expected:
            reasons.append(contract.Reason("unit_mismatch", "payload.unit", "unit does not fit the metric"))
        normal["metric_value"] = value * known[1] if value is not None and known else None
        normal["unit"] = known[0] if known else None
        normal["metric_name"] = name
    elif etype == "cost":
        amount = payload.get("amount") if _is_number(payload.get("amount")) else None
        currency = payload.get("currency") if isinstance(payload.get("currency"), str) else None
        rate = contract.FX_TO_USD.get(currency) if currency else None
        if amount is not None and amount <= 0:
            reasons.append(contract.Reason("non_positive_cost", "payload.amount", "not positive"))
        if amount is not None and currency and re.fullmatch("[A-Z]{3}", currency) and rate is None:
            reasons.append(contract.Reason("unknown_currency", "payload.currency", "no rate"))
        normal["cost_usd"] = amount * rate if amount is not None and rate is not None else None
    elif etype == "security":
        severity = payload.get("severity")
        if severity in contract.SEVERITIES and contract.severity_rank(severity) < contract.severity_rank(
            contract.MIN_SECURITY_SEVERITY
        ):
            reasons.append(
                contract.Reason("security_severity_below_warning", "payload.severity", "below warning")
            )
    return reasons, normal


def parse_timestamp_shape(value: Any) -> bool:
    pattern = contract.event_schema()["properties"]["timestamp"]["pattern"]
    return isinstance(value, str) and re.search(pattern[:-1] + r"\Z", value) is not None


def canonical_payload(canonical: dict[str, Any], normal: dict[str, Any]) -> Any:
    payload = canonical.get("payload")
    if not isinstance(payload, dict):
        return payload
    out = dict(payload)
    etype = canonical.get("event_type")
    if etype == "telemetry":
        out |= {"metric_value": normal.get("metric_value"), "unit": normal.get("unit")}
    elif etype == "cost":
        out |= {"amount": normal.get("cost_usd"), "currency": "USD"}
    # json_merge_patch drops members set to null.
    if etype in ("telemetry", "cost"):
        out = {k: v for k, v in out.items() if not (k in ("metric_value", "unit", "amount") and v is None)}
    return out


def scalar_text(value: Any) -> str | None:
    """A JSON value as DuckDB's json_extract_string gives it."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _lookup(payload: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(payload, dict):
            return None
        payload = payload.get(part)
    return payload


def normalised_row(
    canonical: dict[str, Any], major: int | None, event_time: datetime | None, normal: dict
) -> dict:
    etype = canonical.get("event_type") if canonical.get("event_type") in contract.EVENT_TYPES else None
    payload = canonical_payload(canonical, normal)

    def text(name: str) -> str | None:
        value = canonical.get(name)
        return value if isinstance(value, str) else None

    def ptext(name: str) -> str | None:
        value = payload.get(name) if isinstance(payload, dict) else None
        return value if isinstance(value, str) else None

    row: dict[str, Any] = {
        "event_id": text("event_id").lower() if text("event_id") else None,
        "event_time": event_time,
        "tenant_id": text("tenant_id"),
        "source_module": text("source_module"),
        "event_type": text("event_type"),
        "schema_version": canonical.get("schema_version")
        if isinstance(canonical.get("schema_version"), str)
        else None,
        "schema_major": major,
        "correlation_id": text("correlation_id"),
        "severity": ptext("severity") if etype == "security" else text("severity"),
        "environment": text("environment"),
        "tags": canonical.get("tags") if isinstance(canonical.get("tags"), dict) else None,
        "metric_name": normal.get("metric_name") if etype == "telemetry" else None,
        "metric_value": normal.get("metric_value") if etype == "telemetry" else None,
        "unit": normal.get("unit") if etype == "telemetry" else None,
        "cost_type": ptext("cost_type") if etype == "cost" else None,
        "cost_usd": normal.get("cost_usd") if etype == "cost" else None,
        "threat_type": ptext("threat_type") if etype == "security" else None,
        "policy_id": ptext("policy_id") if etype == "policy" else None,
        "policy_category": ptext("policy_category") if etype == "policy" else None,
        "outcome": ptext("outcome") if etype == "policy" else None,
        "payload": payload,
    }
    for dim, by_type in contract.DIMENSION_SOURCES.items():
        values = [scalar_text(_lookup(payload, path)) for path in by_type.get(etype, ())]
        row[dim] = next((v for v in values if v is not None), None)
    return row


def judge_batch(records: list[tuple[int, str, bool]], received_at: datetime) -> list[Judged]:
    """Judge a batch of (rec_idx, raw_text, utf8_ok) records: the reference for validate_batches."""
    parsed: list[tuple[int, str, bool, Any, int | None, dict | None, datetime | None]] = []
    for rec_idx, raw_text, utf8_ok in records:
        value: Any = None
        ok_json = False
        if utf8_ok:
            try:
                value = parse_record(raw_text)
                ok_json = True
            except ValueError:
                pass
        major = schema_major(value) if ok_json and isinstance(value, dict) else None
        canonical = to_canonical(value, major) if ok_json and isinstance(value, dict) else None
        event_time = parse_timestamp(canonical.get("timestamp")) if canonical else None
        parsed.append((rec_idx, raw_text, utf8_ok and ok_json, value, major, canonical, event_time))

    limit = received_at + contract.MAX_FUTURE_SKEW
    usable = [t for *_, t in parsed if t is not None and t <= limit]
    newest = max(usable) if usable else None

    out = []
    for (rec_idx, raw_text, utf8_ok, *_), (_, _, ok, value, major, canonical, event_time) in zip(
        records, parsed, strict=True
    ):
        judged = Judged(rec_idx, raw_text)
        if not utf8_ok:
            judged.reasons = [contract.Reason("invalid_utf8", "", "record is not valid UTF-8 text")]
        elif not ok:
            judged.reasons = [contract.Reason("malformed_json", "", "record is not valid JSON")]
        elif not isinstance(value, dict):
            judged.reasons = [
                contract.Reason("not_an_object", "", f"record is a JSON {_json_type_name(value)}")
            ]
        elif major is not None and major not in contract.ACCEPTED_MAJORS:
            judged.reasons = [contract.Reason("unsupported_schema_version", "schema_version", "unsupported")]
        else:
            assert canonical is not None
            rules, normal = business_reasons(canonical, event_time, received_at, newest)
            judged.reasons = schema_reasons(canonical) + rules
            judged.row = normalised_row(canonical, major, event_time, normal)
        out.append(judged)
    return out
