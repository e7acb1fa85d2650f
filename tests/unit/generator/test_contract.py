"""What the generator writes is what the event contract expects: every good record is stored, every
bad record is dead-lettered for its one reason, and the manifest's counts are exact."""

from __future__ import annotations

import re
from collections import Counter

import orjson

from hub_pipelines.generator import corruption


def test_every_record_of_a_clean_run_is_stored(clean):
    ingested, manifest = clean.ingested, clean.manifest
    assert ingested.dead == []
    assert ingested.duplicates == 0
    assert ingested.events_in == len(ingested.stored) == manifest["expected"]["stored"]
    assert manifest["expected"] == {
        "events_in": ingested.events_in,
        "stored": ingested.events_in,
        "duplicates": 0,
        "dead_lettered": 0,
        "dead_letter_reasons": {},
    }
    by_type = Counter(row["event_type"] for row in ingested.stored)
    assert dict(by_type) == {k: v for k, v in manifest["events_by_event_type"].items() if v}
    assert set(by_type) == {"telemetry", "cost", "security", "policy", "governance", "metadata"}


def test_the_batches_mix_the_forms_the_contract_accepts(clean, files_of, records_of):
    records = [orjson.loads(text) for path in files_of(clean.out_dir) for text in records_of(path)]
    legacy = [r for r in records if "module" in r]
    assert legacy and all(isinstance(r["ts"], int) and r["schema_version"].startswith("1.") for r in legacy)
    assert {"metric", "value", "labels"} <= set(legacy[0]["payload"])
    assert len({r["tenant"] for r in legacy}) == 1
    policy = [r for r in records if r.get("source_module") == "llm-policy-engine"]
    assert policy and all({"evaluation_id", "evaluated_at", "org_id"} <= set(r) for r in policy)
    assert {r["payload"]["decision"] for r in policy} <= {"allow", "deny"}
    registry = [r for r in records if r.get("source_module") == "llm-registry"]
    assert registry and all({"record_id", "recorded_at", "organization"} <= set(r) for r in registry)
    assert {"model_id", "display_name", "model_version", "owner_team", "kind"} <= set(registry[0]["payload"])
    assert {r["payload"]["kind"] for r in registry} >= {"model", "prompt", "agent"}
    assert any(r["payload"]["depends_on"] for r in registry)
    telemetry = [r for r in records if r.get("event_type") == "telemetry"]
    assert {r["payload"]["unit"] for r in telemetry if r["payload"]["metric_name"] == "latency_ms"} == {
        "ms",
        "s",
    }
    currencies = Counter(r["payload"]["currency"] for r in records if r.get("event_type") == "cost")
    assert currencies["USD"] > currencies["EUR"] + currencies["GBP"] > 0
    stamps = [r.get("timestamp") or r.get("evaluated_at") or r.get("recorded_at") for r in records]
    offsets = Counter(re.search(r"(Z|[+-]\d\d:?\d\d)$", s).group(1) for s in stamps if isinstance(s, str))
    assert offsets["Z"] < sum(offsets.values()) / 2 and len(offsets) >= 4


def test_security_detections_carry_their_indicators(clean):
    security = [row for row in clean.ingested.stored if row["event_type"] == "security"]
    assert security
    for row in security:
        assert row["severity"] in ("warning", "error", "critical")
        assert {"ip", "user_id", "model", "api_key_id"} <= set(row["payload"]["indicators"])


def test_retries_share_the_correlation_id_of_their_call(clean):
    sim = clean.sim
    r = sim.requests
    retried = r.call[r.retry > 0]
    assert len(retried) > 0
    latency = [row for row in clean.ingested.stored if row["metric_name"] == "latency_ms"]
    retry_counts = Counter(
        row["correlation_id"] for row in latency if row["payload"]["dimensions"]["retry_count"] > 0
    )
    for correlation_id in retry_counts:
        attempts = [row for row in latency if row["correlation_id"] == correlation_id]
        assert sorted(row["payload"]["dimensions"]["retry_count"] for row in attempts)[0] == 0
        assert all(
            a["payload"]["dimensions"]["status"] != "ok"
            for a in attempts
            if a["event_time"] < max(b["event_time"] for b in attempts)
        )


def test_every_bad_record_fails_for_its_one_expected_reason(corrupted):
    ingested, expected = corrupted.ingested, corrupted.manifest["expected"]
    assert all(len(judged.reasons) == 1 for _, judged in ingested.dead)
    assert ingested.events_in == expected["events_in"]
    assert len(ingested.stored) == expected["stored"]
    assert ingested.duplicates == expected["duplicates"]
    assert len(ingested.dead) == expected["dead_lettered"]
    assert dict(ingested.reasons) == expected["dead_letter_reasons"]
    assert expected["events_in"] == expected["stored"] + expected["duplicates"] + expected["dead_lettered"]


def test_every_kind_of_bad_record_occurs_and_is_counted(corrupted):
    manifest = corrupted.manifest
    kinds = {k.name for k in corruption.KINDS} | {"duplicate_other_file"}
    assert set(manifest["corruptions"]) == kinds
    expected_reasons = Counter()
    for kind, count in manifest["corruptions"].items():
        reason = corruption.expected_reason(kind.removesuffix("_other_file"), "jsonl")
        if reason:
            expected_reasons[reason] += count
    assert dict(expected_reasons) == manifest["expected"]["dead_letter_reasons"]
    good = manifest["events_written"]
    assert 0.1 * good < sum(manifest["corruptions"].values()) < 0.2 * good


def test_duplicates_are_exact_copies_in_the_same_and_in_other_files(corrupted):
    pairs = corrupted.ingested.duplicate_files
    assert any(copy == original for copy, original in pairs)
    assert any(copy != original for copy, original in pairs)


def test_stored_events_are_those_of_the_simulation_and_nothing_else(corrupted):
    """Late, future and broken copies never reach the store: what is stored is exactly the
    simulated events, so in-memory series describe the stored data."""
    sim, stored = corrupted.sim, corrupted.ingested.stored
    written = corrupted.manifest["events_by_source"]
    assert Counter(row["source_module"] for row in stored) == Counter({k: v for k, v in written.items() if v})
    assert written["llm-observatory"] == 3 * len(sim.requests)
    assert written["llm-costops"] == len(sim.requests)
    assert written["llm-sentinel"] == len(sim.security)
    start, end = sim.config.start_utc, sim.config.end_utc
    assert all(start <= row["event_time"] < end for row in stored)


def test_the_manifest_says_when_its_counts_hold(corrupted):
    window = corrupted.manifest["received_at_window"]
    assert window["from"] < corrupted.manifest["time_range"]["end"] < window["to"]


def test_array_and_gzip_batches_keep_the_counts(corrupted_array_gzip, files_of):
    ingested, manifest = corrupted_array_gzip.ingested, corrupted_array_gzip.manifest
    assert all(p.name.endswith(".json.gz") for p in files_of(corrupted_array_gzip.out_dir))
    assert all(len(judged.reasons) == 1 for _, judged in ingested.dead)
    assert (ingested.events_in, len(ingested.stored), ingested.duplicates, len(ingested.dead)) == (
        manifest["expected"]["events_in"],
        manifest["expected"]["stored"],
        manifest["expected"]["duplicates"],
        manifest["expected"]["dead_lettered"],
    )
    assert dict(ingested.reasons) == manifest["expected"]["dead_letter_reasons"]
    # A cut-short element cannot live in a JSON array: there it is a string of broken JSON.
    assert (
        manifest["expected"]["dead_letter_reasons"].get("not_an_object")
        == manifest["corruptions"]["malformed"]
    )
    assert "malformed_json" not in manifest["expected"]["dead_letter_reasons"]


def test_the_compiled_validator_agrees_with_the_manifest(corrupted, files_of):
    """The production path (split_records + the DuckDB validator) reaches the same counts."""
    from hub_pipelines.events.records import split_records
    from hub_pipelines.events.sql_validator import validate_batches

    batches = [split_records(path.read_bytes()) for path in files_of(corrupted.out_dir)]
    judged = validate_batches(batches, corrupted.sim.config.end_utc).table()
    valid = judged.filter(judged["is_valid"])
    reasons = Counter(r["code"] for rs in judged["reasons"].to_pylist() for r in rs)
    expected = corrupted.manifest["expected"]
    assert judged.num_rows == expected["events_in"]
    assert len(set(valid["event_id"].to_pylist())) == expected["stored"]
    assert valid.num_rows - expected["stored"] == expected["duplicates"]
    assert dict(reasons) == expected["dead_letter_reasons"]
