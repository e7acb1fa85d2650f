"""The alert rules file: the shipped default loads, and every kind of mistake is refused with a
message that names the file, the rule and the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hub_pipelines.alerts import RuleFileError, default_rules_path, load_rules, parse_rules, rules_path
from hub_pipelines.alerts.evaluate import Firing, _composite, fingerprint, period_bounds
from hub_pipelines.alerts.rules import (
    AnomalyRule,
    CompositeRule,
    PredictiveRule,
    RateOfChangeRule,
    ThresholdRule,
    format_duration,
    parse_duration,
)


def test_the_shipped_rules_load_and_use_every_rule_type():
    ruleset = load_rules(default_rules_path())
    types = {type(rule) for rule in ruleset.rules}
    assert types == {ThresholdRule, RateOfChangeRule, AnomalyRule, PredictiveRule, CompositeRule}
    assert {c.type for c in ruleset.channels} == {"webhook", "slack", "email"}
    budget = ruleset.rule("monthly-budget")
    assert budget.mode == "cumulative" and budget.scope.dimensions == {"model": None, "project": None}
    assert [c.name for c in ruleset.channels_for(budget)] == ["ops-webhook", "ops-slack", "oncall-email"]
    assert ruleset.dedup_window(ruleset.rule("anomaly-high")) == timedelta(hours=6)
    assert not ruleset.rule("error-rate-elevated").standalone


def test_rules_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HUB_ALERT_RULES", raising=False)
    assert rules_path() == default_rules_path()
    custom = tmp_path / "mine.yaml"
    custom.write_text("rules: []\n")
    monkeypatch.setenv("HUB_ALERT_RULES", str(custom))
    assert rules_path() == custom and load_rules().rules == []
    assert rules_path(tmp_path / "explicit.yaml") == tmp_path / "explicit.yaml"


def test_a_full_rule_is_read_as_written():
    ruleset = parse_rules(
        """
version: 1
defaults: {dedup_window: 90m, channels: [hook]}
channels: [{name: hook, type: webhook, url_env: MY_HOOK_URL}]
rules:
  - id: p95.slo_1
    name: p95 latency
    type: threshold
    severity: critical
    scope: {tenant: [tenant-01, tenant-02], source: llm-observatory, dimensions: {model: gpt-4o, project: null}}
    metric: latency_ms
    agg: p95
    op: ">="
    value: 2500
    for: 30m
    bucket: 5m
    group_by: [model, category]
    dedup_window: 2h
    silenced_until: 2026-11-20T10:00:00
"""
    )
    rule = ruleset.rule("p95.slo_1")
    assert rule.for_ == timedelta(minutes=30) and rule.bucket_delta == timedelta(minutes=5)
    assert rule.keys == ["tenant_id", "model", "policy_category"]
    assert rule.scope.query_filters() == {
        "tenant_id": ["tenant-01", "tenant-02"],
        "source_module": "llm-observatory",
        "model": "gpt-4o",
        "project": None,
    }
    assert ruleset.dedup_window(rule) == timedelta(hours=2)
    assert ruleset.defaults.dedup_window == timedelta(minutes=90)
    assert rule.silenced_until == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert rule.is_silenced(datetime(2026, 11, 20, 9, tzinfo=UTC))
    assert not rule.is_silenced(datetime(2026, 11, 20, 11, tzinfo=UTC))
    assert ruleset.channel("hook").url_env == "MY_HOOK_URL"
    assert ruleset.source == "<string>"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "not valid YAML"),
        ("- just a list", "the top level must be a mapping"),
        ("version: 2", "version"),
        ("rules: [{id: Bad Id, type: anomaly}]", "rules[0] ('Bad Id') > id: 'Bad Id' is not a rule id"),
        ("rules: [{id: a, type: thresholdd}]", "rules[0] ('a'): unknown rule type 'thresholdd'; allowed: threshold,"),
        ("rules: [{id: a}]", "rules[0] ('a'): missing `type`"),
        ("rules: [{id: a, type: anomaly, colour: red}]", "rules[0] ('a') > colour: unknown key 'colour'"),
        ("rules: [{id: a, type: threshold, metric: latency_ms, value: 1}]", "rules[0] ('a') > for: missing required key"),
        ("rules: [{id: a, type: threshold, metric: latency_ms, value: 1, for: soon}]",
         "for: 'soon' is not a duration; use a number and a unit"),
        ("rules: [{id: a, type: threshold, metric: latency, value: 1, for: 1h}]", "unknown metric 'latency'; allowed:"),
        ("rules: [{id: a, type: threshold, metric: requests, agg: p95, value: 1, for: 1h}]",
         "agg 'p95' is not allowed for metric 'requests'; allowed: sum"),
        ("rules: [{id: a, type: threshold, metric: requests, value: 1, for: 90m}]", "must be a multiple of bucket (1h)"),
        ("rules: [{id: a, type: threshold, metric: requests, value: 1, for: 1h, group_by: [colour]}]",
         "group_by: unknown dimension 'colour'"),
        ("rules: [{id: a, type: threshold, metric: requests, value: 1, for: 1h, scope: {dimensions: {model: []}}}]",
         "an empty list matches nothing"),
        ("rules: [{id: a, type: rate_of_change, metric: requests, change_pct: 0}]", "change_pct"),
        ("rules: [{id: a, type: anomaly, min_severity: huge}]", "min_severity"),
        ("rules: [{id: a, type: anomaly, scope: {source: llm-sentinel}}]", "cannot be scoped by source"),
        ("rules: [{id: a, type: anomaly, scope: {dimensions: {region: eu}}}]", "unknown dimension 'region'"),
        ("rules: [{id: a, type: predictive, metric: latency_p95_ms, limit: 1, within_days: 3, mode: cumulative}]",
         "must be a counter of the query interface"),
        ("rules: [{id: a, type: composite, operator: and, rules: [b, c]}, {id: b, type: anomaly}]",
         "composite refers to unknown rule 'c'"),
        ("rules: [{id: a, type: composite, operator: xor, rules: [b, c]}]", "operator"),
        ("rules: [{id: a, type: composite, operator: and, rules: [b, a]}, {id: b, type: anomaly}]",
         "cannot refer to itself"),
        ("rules: [{id: a, type: composite, operator: and, rules: [b, c]}, {id: b, type: composite, operator: or,"
         " rules: [a, c]}, {id: c, type: anomaly}]", "in a cycle: a -> b -> a"),
        ("rules: [{id: a, type: anomaly}, {id: a, type: anomaly}]", "rule id 'a' is used twice"),
        ("rules: [{id: a, type: anomaly, channels: [pager]}]", "rule 'a': unknown channel 'pager'"),
        ("defaults: {channels: [pager]}", "defaults.channels: unknown channel 'pager'"),
        ("channels: [{name: m, type: email}]", "channels[0] ('m'): an email channel needs `to`"),
        ("channels: [{name: m, type: email, to: [nobody]}]", "'nobody' is not an email address"),
        ("channels: [{name: h, type: webhook, url_env: 'https://hooks.example.com/x'}]",
         "url_env names an environment variable"),
        ("channels: [{name: h, type: pager}]", "channels[0] ('h') > type"),
        ("channels: [{name: h, type: slack}, {name: h, type: webhook}]", "channel names used twice: h"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_with_a_clear_message(text, message):
    with pytest.raises(RuleFileError) as error:
        parse_rules(text, source="rules.yaml")
    assert str(error.value).startswith("alert rules file rules.yaml:")
    assert message in str(error.value), str(error.value)


def test_an_unreadable_file_is_named(tmp_path):
    with pytest.raises(RuleFileError, match="missing.yaml: cannot be read"):
        load_rules(tmp_path / "missing.yaml")


def test_durations():
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration(600) == timedelta(minutes=10)
    for bad in ("", "h", "-1h", "0m", "3 days"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(timedelta(hours=h)) for h in (1, 24, 36, 168)] == ["1h", "1d", "36h", "1w"]


def _firing(rule, tenant, model=None, value=1.0):
    labels = {"tenant_id": tenant} | ({"model": model} if model else {})
    return Firing(rule, "threshold", "warning", labels, f"{rule} {tenant} {model}", value=value)


def test_composite_matches_on_its_labels():
    rule = parse_rules(
        "rules: [{id: a, type: anomaly}, {id: b, type: anomaly},"
        " {id: both, type: composite, operator: and, rules: [a, b]},"
        " {id: either, type: composite, operator: or, rules: [a, b]},"
        " {id: same-model, type: composite, operator: and, rules: [a, b], match_on: [tenant_id, model]}]"
    )
    a = [_firing("a", "t1", "m1"), _firing("a", "t2", "m1")]
    b = [_firing("b", "t1", "m2"), _firing("b", "t3", "m1")]
    both = _composite(rule.rule("both"), [a, b])
    assert [f.labels for f in both] == [{"tenant_id": "t1"}]
    assert [c["rule_id"] for c in both[0].details["children"]] == ["a", "b"]
    either = _composite(rule.rule("either"), [a, b])
    assert [f.labels["tenant_id"] for f in either] == ["t1", "t2", "t3"]
    assert _composite(rule.rule("same-model"), [a, b]) == []
    assert _composite(rule.rule("both"), [a, []]) == []


def test_fingerprints_depend_on_the_rule_and_the_group_only():
    one = _firing("a", "t1", "m1", value=3.0)
    assert one.fingerprint == _firing("a", "t1", "m1", value=99.0).fingerprint
    assert one.fingerprint != _firing("a", "t1", "m2").fingerprint
    assert one.fingerprint != _firing("b", "t1", "m1").fingerprint
    assert fingerprint("a", {"x": 1, "y": 2}) == fingerprint("a", {"y": 2, "x": 1})


def test_budget_periods():
    moment = datetime(2026, 12, 17, 15, 30, tzinfo=UTC)  # a Thursday
    assert period_bounds(moment, "month") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds(moment, "week") == (
        datetime(2026, 12, 14, tzinfo=UTC),
        datetime(2026, 12, 21, tzinfo=UTC),
    )
    assert period_bounds(moment, "day") == (
        datetime(2026, 12, 17, tzinfo=UTC),
        datetime(2026, 12, 18, tzinfo=UTC),
    )
    assert period_bounds(moment, "none") == (moment, None)
