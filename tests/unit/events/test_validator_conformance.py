"""The compiled SQL validator gives the same verdicts, reasons and normalised values as the
event-at-a-time jsonschema reference, on valid events of every layout and on their mutations."""

from __future__ import annotations

import copy
import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub_pipelines.events import contract
from hub_pipelines.events.reference import judge_batch
from hub_pipelines.events.sql_validator import validate_batches, validate_records

RECEIVED_AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

identifiers = st.from_regex(r"\A[a-z][a-z0-9-]{0,12}\Z")
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
moments = st.datetimes(
    min_value=datetime(2026, 11, 10), max_value=datetime(2026, 11, 20, 12, 30), timezones=st.just(UTC)
)
offsets = st.sampled_from(["Z", "+00:00", "+01:00", "-05:30", "+0200"])


@st.composite
def timestamps(draw) -> str:
    moment = draw(moments)
    offset = draw(offsets)
    hours, minutes = (0, 0) if offset in ("Z", "+00:00") else (int(offset[1:3]), int(offset[-2:]))
    sign = -1 if offset.startswith("-") else 1
    local = moment + sign * timedelta(hours=hours, minutes=minutes)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if draw(st.booleans()):
        text += "." + str(draw(st.integers(0, 999999))).zfill(6)
    return text + offset


def scalar_maps(keys):
    return st.dictionaries(
        st.sampled_from(keys), st.one_of(identifiers, st.integers(0, 1000), st.booleans()), max_size=4
    )


def payload_for(etype: str):
    if etype == "telemetry":
        metric = st.sampled_from([*contract.METRIC_UNITS, "custom_metric"])
        units = st.sampled_from(["ms", "s", "us", "count", "tokens", "bytes", "KiB", "ratio", "%", "rpm"])
        return st.fixed_dictionaries(
            {"metric_name": metric, "metric_value": st.floats(0, 1e6, allow_nan=False), "unit": units},
            optional={
                "dimensions": scalar_maps(["model", "provider", "project", "team", "region", "status"])
            },
        )
    if etype == "cost":
        return st.fixed_dictionaries(
            {
                "cost_type": st.sampled_from(["inference", "embedding", "fine_tuning", "storage", "other"]),
                "amount": st.floats(0.0001, 1000, allow_nan=False),
                "currency": st.sampled_from(["USD", "EUR", "GBP"]),
            },
            optional={"attribution": scalar_maps(["project", "team", "model", "provider"])},
        )
    if etype == "security":
        return st.fixed_dictionaries(
            {
                "threat_type": st.sampled_from(["prompt_injection", "jailbreak", "pii_leak"]),
                "severity": st.sampled_from(["warning", "error", "critical"]),
                "description": words,
            },
            optional={"indicators": scalar_maps(["ip", "user_id", "model"]), "confidence": st.floats(0, 1)},
        )
    if etype == "policy":
        return st.fixed_dictionaries(
            {
                "policy_id": identifiers,
                "policy_category": st.sampled_from(["data_privacy", "content_safety", "rate_limit"]),
                "outcome": st.sampled_from(["pass", "fail"]),
            },
            optional={"subject": scalar_maps(["model", "project", "asset_id"]), "reason": words},
        )
    if etype == "governance":
        return st.fixed_dictionaries(
            {"action": st.sampled_from(["approval", "audit_log"]), "actor": words, "resource": words},
            optional={"status": st.sampled_from(["approved", "pending"])},
        )
    return st.fixed_dictionaries(
        {
            "asset_id": identifiers,
            "asset_name": words,
            "asset_type": st.sampled_from(["model", "prompt", "agent"]),
            "version": st.sampled_from(["1.0.0", "2.3"]),
            "owner": words,
        },
        optional={"depends_on": st.lists(identifiers, max_size=3), "provider": identifiers},
    )


SOURCE_OF = {
    "telemetry": "llm-observatory",
    "cost": "llm-costops",
    "security": "llm-sentinel",
    "policy": "llm-policy-engine",
    "governance": "llm-governance",
    "metadata": "llm-registry",
}


@st.composite
def valid_events(draw) -> dict:
    etype = draw(st.sampled_from(contract.EVENT_TYPES))
    event = {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "timestamp": draw(timestamps()),
        "source_module": SOURCE_OF[etype],
        "event_type": etype,
        "schema_version": draw(st.sampled_from(["2.0.0", "2.4.1"])),
        "tenant_id": draw(identifiers),
        "payload": draw(payload_for(etype)),
    }
    for name, strategy in {
        "correlation_id": st.one_of(st.none(), identifiers),
        "severity": st.one_of(st.none(), st.sampled_from(contract.SEVERITIES)),
        "environment": st.one_of(st.none(), st.sampled_from(["production", "staging"])),
        "tags": st.one_of(st.none(), st.dictionaries(identifiers, identifiers, max_size=3)),
    }.items():
        if draw(st.booleans()):
            event[name] = draw(strategy)
    return (
        draw(st.sampled_from(["canonical", "native_or_legacy"])) == "canonical"
        and event
        or _relayout(event, draw)
    )


def _relayout(event: dict, draw) -> dict:
    """The same event in the legacy 1.x layout or its source's own names, where one exists."""
    mappings = contract.source_mappings()
    etype = event["event_type"]
    spec = mappings["sources"].get(event["source_module"])
    if spec:
        out = {_old(spec["envelope"], k): v for k, v in event.items()}
        out["payload"] = {_old(spec["payload"].get(etype, {}), k): v for k, v in event["payload"].items()}
        for target, values in spec.get("values", {}).items():
            t, name = target.split(".")
            reverse = {new: old for old, new in values.items()}
            if t == etype and out["payload"].get(name) in reverse:
                out["payload"][name] = reverse[out["payload"][name]]
        return out
    legacy = mappings["legacy"]
    out = {_old(legacy["envelope"], k): v for k, v in event.items()}
    out["schema_version"] = draw(st.sampled_from(["1.2.0", "0.9.1"]))
    out["payload"] = {_old(legacy["payload"].get(etype, {}), k): v for k, v in event["payload"].items()}
    if draw(st.booleans()):
        moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        out["ts"] = int(moment.timestamp() * 1000)
    return out


def _old(names: dict[str, str], new: str) -> str:
    return next((old for old, n in names.items() if n == new), new)


WRONG_VALUES = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.booleans(),
    words,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(identifiers, st.integers(), max_size=2),
    st.just(""),
    st.just("3.0.0"),
    st.just("2026-13-45T10:00:00Z"),
)


@st.composite
def mutated(draw, event: dict) -> dict:
    """An event with one to three things changed: a field removed, replaced or added."""
    out = copy.deepcopy(event)
    for _ in range(draw(st.integers(1, 3))):
        target = out if draw(st.booleans()) or not isinstance(out.get("payload"), dict) else out["payload"]
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        keys = sorted(target)
        if action == "drop" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(WRONG_VALUES)
        else:
            target[
                draw(
                    st.sampled_from(
                        ["extra", "unit", "amount", "severity", "metric_value", "currency", "dimensions"]
                    )
                )
            ] = draw(WRONG_VALUES)
    return out


def _compare(lines: list[str]) -> None:
    records = pa.table(
        {
            "rec_idx": pa.array(range(len(lines)), pa.int64()),
            "raw": pa.array(lines, pa.large_string()),
            "utf8_ok": pa.array([True] * len(lines)),
        }
    )
    sql_rows = {row["rec_idx"]: row for row in validate_records(records, RECEIVED_AT).to_pylist()}
    reference = judge_batch([(i, line, True) for i, line in enumerate(lines)], RECEIVED_AT)
    for judged in reference:
        got = sql_rows[judged.rec_idx]
        expected_reasons = sorted({(r.code, r.field) for r in judged.reasons})
        got_reasons = sorted({(r["code"], r["field"]) for r in got["reasons"]})
        assert got_reasons == expected_reasons, f"record {judged.raw_text}"
        assert got["is_valid"] == judged.is_valid
        if judged.is_valid:
            _compare_row(judged.row, got, judged.raw_text)


def _compare_row(expected: dict, got: dict, raw: str) -> None:
    for name, value in expected.items():
        actual = got[name]
        if name in ("payload", "tags"):
            actual = json.loads(actual) if actual is not None else None
            assert _close(actual, value), f"{name} of {raw}: {actual} != {value}"
        elif isinstance(value, float):
            assert math.isclose(actual, value, rel_tol=1e-9, abs_tol=1e-12), f"{name} of {raw}"
        else:
            assert actual == value, f"{name} of {raw}: {actual!r} != {value!r}"


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(valid_events(), min_size=1, max_size=25))
def test_valid_events_agree(events):
    _compare([json.dumps(e) for e in events])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.data())
def test_mutated_events_agree(data):
    events = data.draw(st.lists(valid_events(), min_size=1, max_size=20))
    lines = [json.dumps(data.draw(mutated(e))) if data.draw(st.booleans()) else json.dumps(e) for e in events]
    _compare(lines)


# -- the lean path (fast_path.py) against the full statements --------------------------------------
# The conformance tests above already run through the lean path (validate_records uses it). These
# hold it to the full statements byte for byte, on records written the ways its shortcuts could
# misread: other key orders and spacing, escaped and non-ASCII strings, duplicate keys, numbers at
# the edges, timestamps with offsets and nanoseconds, legacy epoch milliseconds.

TRICKY_STRINGS = st.sampled_from(
    ['a"b', "back\\slash", "tab\there", "é ü 中", "colon: value", "{x}", "[1]", ""]
)


@st.composite
def stressed(draw, event: dict) -> dict:
    """The event with one value changed to something valid or invalid the lean path must judge."""
    out = copy.deepcopy(event)
    payload = out.get("payload") if isinstance(out.get("payload"), dict) else {}
    maps = [k for k in ("dimensions", "attribution", "labels") if isinstance(payload.get(k), dict)]
    change = draw(
        st.sampled_from(
            ["correlation", "tag", "map_value", "number", "timestamp", "millis", "unit_case", "none"]
        )
    )
    if change == "correlation":
        out["correlation_id"] = draw(TRICKY_STRINGS)
    elif change == "tag":
        out["tags"] = {"k": draw(st.one_of(TRICKY_STRINGS, st.integers(), st.none()))}
    elif change == "map_value" and maps:
        payload[maps[0]]["model"] = draw(
            st.one_of(TRICKY_STRINGS, st.floats(allow_nan=False), st.booleans(), st.none(), st.just({"x": 1}))
        )
    elif change == "number":
        key = next((k for k in ("metric_value", "value", "amount") if k in payload), None)
        if key:
            payload[key] = draw(
                st.sampled_from([2**64, 2**63, -0.0, 1e308, 5, 5.0, 1e-7, 123456789.123456789])
            )
    elif change == "timestamp":
        key = "timestamp" if "timestamp" in out else "ts"
        digits = draw(st.integers(0, 9))
        fraction = "." + "1234567890"[:digits] if digits else ""
        suffix = draw(st.sampled_from(["Z", "z", "+00:00", "+0000", "-00:00", "+05:30", "-1200"]))
        out[key] = f"2026-11-20T0{draw(st.integers(0, 9))}:00:00{fraction}{suffix}"
    elif change == "millis" and "ts" in out:
        out["ts"] = draw(st.sampled_from([1795000000000.5, -5, 10**15, 1795000000000, "1795000000000"]))
    elif change == "unit_case" and "unit" in payload:
        payload["unit"] = str(payload["unit"]).upper()
    return out


def _render(draw, event: dict) -> str:
    how = draw(st.sampled_from(["minified", "spaced", "ascii", "shuffled", "indented", "duplicate_key"]))
    if how == "minified":
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if how == "ascii":
        return json.dumps(event, separators=(",", ":"))
    if how == "indented":
        return json.dumps(event, indent=1, ensure_ascii=False).replace("\n", " ")
    if how == "shuffled":
        keys = draw(st.permutations(sorted(event)))
        return json.dumps({k: event[k] for k in keys}, separators=(",", ":"))
    if how == "duplicate_key":
        text = json.dumps(event, separators=(",", ":"))
        return text.replace('"payload":{', '"payload":{"unit":"s",', 1)
    return json.dumps(event)


def _validated(lines: list[str], lean: bool) -> pa.Table:
    records = pa.table(
        {
            "rec_idx": pa.array(range(len(lines)), pa.int64()),
            "raw": pa.array(lines, pa.large_string()),
            "utf8_ok": pa.array([True] * len(lines)),
        }
    )
    return validate_batches([records], RECEIVED_AT, lean=lean).table().sort_by("rec_idx")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.data())
def test_lean_path_gives_the_full_paths_rows(data):
    events = data.draw(st.lists(valid_events(), min_size=1, max_size=15))
    lines = []
    for event in events:
        if data.draw(st.booleans()):
            event = data.draw(stressed(event))
        if data.draw(st.integers(0, 3)) == 0:
            event = data.draw(mutated(event))
        lines.append(_render(data.draw, event))
    lean, full = _validated(lines, lean=True), _validated(lines, lean=False)
    for name in full.column_names:
        for i, (got, expected) in enumerate(zip(lean[name].to_pylist(), full[name].to_pylist(), strict=True)):
            assert got == expected, f"{name} of {lines[i]}: lean {got!r}, full {expected!r}"
