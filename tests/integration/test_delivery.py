"""Delivery to real servers on 127.0.0.1: an HTTP server (http.server in a thread) standing in for a
generic webhook and a Slack incoming webhook, and an SMTP server (aiosmtpd). Each answers an error
first, so every channel is seen retrying; every attempt is recorded; URLs and secrets appear in no
log line and no stored row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from hub_pipelines.alerts import (
    DeliverySettings,
    build_transport,
    deliveries,
    list_alerts,
    parse_rules,
    run_alerts,
)
from hub_pipelines.defs.publish.assets import alerts as alerts_asset
from hub_pipelines.resources import WarehouseResource
from hub_pipelines.resources.notifiers import (
    EmailNotifierResource,
    SlackNotifierResource,
    WebhookNotifierResource,
)
from hub_pipelines.warehouse import tables

AS_OF = datetime(2026, 11, 19, 12, tzinfo=UTC)
WEBHOOK_TOKEN = "tok-Z9secret-bearer"
WEBHOOK_SECRET = "hmac-Q7secret-key"
SLACK_PATH = "/services/T000/B000/XXXXslacksecret"
RULES = """
defaults: {dedup_window: 6h, channels: [hook, slack, mail]}
channels:
  - {name: hook, type: webhook}
  - {name: slack, type: slack}
  - {name: mail, type: email, to: [oncall@example.com, finance@example.com]}
rules:
  - {id: anomaly-high, name: High-severity anomaly, type: anomaly, severity: critical, min_severity: high,
     lookback: 2h}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Http:
    """A loopback HTTP server: answers each path from a script of status codes (then 200)."""

    def __init__(self) -> None:
        self.script: dict[str, list[int]] = {}
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                codes = outer.script.get(path, [])
                code = codes.pop(0) if codes else 200
                outer.requests.append(
                    {"path": path, "headers": dict(self.headers), "body": body, "code": code}
                )
                self.send_response(code)
                if code == 429:
                    self.send_header("Retry-After", "0.05")
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if code < 300 else b"try again")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def posts(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture
def http_server():
    server = _Http()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


class _SmtpHandler:
    def __init__(self) -> None:
        self.temporary_failures = 0
        self.messages: list = []
        self.attempts = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
        self.attempts += 1
        if self.temporary_failures > 0:
            self.temporary_failures -= 1
            return "451 4.3.0 Temporary failure, try again"
        self.messages.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def smtp_server():
    handler = _SmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def _environment(http_server, smtp_port) -> dict[str, str]:
    return {
        "HUB_ALERT_WEBHOOK_URL": f"{http_server.url}/hook?key=Kq8secret-in-url",
        "HUB_ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "HUB_ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "HUB_ALERT_SLACK_WEBHOOK_URL": f"{http_server.url}{SLACK_PATH}",
        "HUB_SMTP_HOST": "127.0.0.1",
        "HUB_SMTP_PORT": str(smtp_port),
        "HUB_SMTP_FROM": "hub@example.com",
    }


def _anomaly(warehouse, tenant="tenant-01", model="gpt-4o", ts=AS_OF - timedelta(hours=1)) -> None:
    row = {
        "series_key": f"{tenant}|latency_p95_ms|{model}",
        "ts": ts,
        "tenant_id": tenant,
        "metric": "latency_p95_ms",
        "model": model,
        "project": None,
        "value": 9100.0,
        "expected_low": 1800.0,
        "expected_high": 3200.0,
        "score": 0.97,
        "severity": "critical",
        "confidence": 0.9,
        "detected_by": json.dumps(["seasonal_residual", "isolation_forest"]),
        "explanation": "p95 latency 2.8x the seasonal baseline for this hour",
        "model_version": "4",
        "scored_at": AS_OF,
    }
    with warehouse.begin() as conn:
        conn.execute(sa.insert(tables.anomalies), [row])


def _secrets(env: dict[str, str]) -> list[str]:
    return [
        env["HUB_ALERT_WEBHOOK_URL"],
        "Kq8secret-in-url",
        WEBHOOK_TOKEN,
        WEBHOOK_SECRET,
        env["HUB_ALERT_SLACK_WEBHOOK_URL"],
        "XXXXslacksecret",
    ]


def test_webhook_slack_and_email_are_delivered_after_a_retry(warehouse, http_server, smtp_server, caplog):
    handler, smtp_port = smtp_server
    env = _environment(http_server, smtp_port)
    http_server.script = {"/hook": [500], SLACK_PATH: [503]}
    handler.temporary_failures = 1
    _anomaly(warehouse)
    caplog.set_level(logging.DEBUG)
    delays: list[float] = []
    settings = DeliverySettings(backoff_s=0.05, max_attempts=3, timeout_s=5)

    run = run_alerts(
        warehouse, parse_rules(RULES), as_of=AS_OF, env=env, settings=settings, sleep=delays.append
    )

    assert run.delivery.notifications_delivered == 1 and run.delivery.failed == 0
    assert delays == [0.05, 0.05, 0.05]  # one retry per channel, after the first backoff
    # The webhook: a 500, then the JSON alert, signed and with the bearer token.
    hook = http_server.posts("/hook")
    assert [r["code"] for r in hook] == [500, 200]
    body = hook[-1]["body"]
    payload = json.loads(body)
    assert payload["kind"] == "opened" and payload["alert"]["rule_id"] == "anomaly-high"
    assert payload["alert"]["labels"] == {"metric": "latency_p95_ms", "model": "gpt-4o", "project": None,
                                          "tenant_id": "tenant-01"}  # fmt: skip
    assert payload["alert"]["severity"] == "critical" and "2.8x" in payload["alert"]["summary"]
    headers = {k.lower(): v for k, v in hook[-1]["headers"].items()}
    assert headers["authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-hub-signature-256"] == f"sha256={expected}"
    # Slack: a 503, then blocks with the summary and the ack command.
    slack = http_server.posts(SLACK_PATH)
    assert [r["code"] for r in slack] == [503, 200]
    message = json.loads(slack[-1]["body"])
    assert "anomaly" in message["text"].lower() and message["blocks"][0]["type"] == "header"
    assert "hub alerts ack" in json.dumps(message["blocks"])
    # Email: a 451, then one message to both recipients.
    assert handler.attempts == 2 and len(handler.messages) == 1
    envelope = handler.messages[0]
    assert envelope.mail_from == "hub@example.com"
    assert sorted(envelope.rcpt_tos) == ["finance@example.com", "oncall@example.com"]
    text = envelope.content.decode(errors="replace")
    assert "Subject: [hub] CRITICAL firing: High-severity anomaly (tenant-01)" in text
    assert "hub alerts ack" in text

    # Every attempt is recorded, with what the server answered.
    (alert,) = list_alerts(warehouse)
    attempts = sorted(
        (
            (d["channel"], d["attempt"], d["outcome"], d["status_code"])
            for d in deliveries(warehouse, alert["alert_id"])
        ),
    )
    assert attempts == [
        ("hook", 1, "retrying", 500),
        ("hook", 2, "delivered", 200),
        ("mail", 1, "retrying", 451),
        ("mail", 2, "delivered", 250),
        ("slack", 1, "retrying", 503),
        ("slack", 2, "delivered", 200),
    ]
    assert alert["notifications_sent"] == 1 and alert["last_notified_at"] is not None

    # No URL or secret in a log line, a stored row, or a transport's repr.
    stored = json.dumps(deliveries(warehouse), default=str)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in _secrets(env):
        assert secret not in logged and secret not in stored
    ruleset = parse_rules(RULES)
    for channel in ruleset.channels:
        transport = build_transport(channel, settings, env)
        assert all(secret not in repr(transport) for secret in _secrets(env))
    assert all(secret not in repr(settings) for secret in _secrets(env))


def test_permanent_errors_are_not_retried_and_failures_are_sent_again(warehouse, http_server, caplog):
    env = {"HUB_ALERT_WEBHOOK_URL": f"{http_server.url}/hook?key=Kq8secret-in-url"}
    http_server.script = {"/hook": [404]}
    _anomaly(warehouse)
    rules = RULES.replace("channels: [hook, slack, mail]", "channels: [hook]")
    delays: list[float] = []
    settings = DeliverySettings(backoff_s=0.01, max_attempts=4)
    caplog.set_level(logging.DEBUG)

    first = run_alerts(
        warehouse, parse_rules(rules), as_of=AS_OF, env=env, settings=settings, sleep=delays.append
    )
    assert first.delivery.failed == 1 and delays == []  # a 404 is not worth a retry
    (alert,) = list_alerts(warehouse)
    assert alert["last_notified_at"] is None
    (attempt,) = deliveries(warehouse, alert["alert_id"])
    assert attempt["outcome"] == "failed" and attempt["status_code"] == 404
    assert "Kq8secret-in-url" not in (attempt["error"] or "")

    # The next evaluation sends it again (it never reached anyone); a 429 honours Retry-After.
    http_server.script = {"/hook": [429]}
    second = run_alerts(
        warehouse, parse_rules(rules), as_of=AS_OF, env=env, settings=settings, sleep=delays.append
    )
    assert [n.kind for n in second.outcome.notifications] == ["opened"]
    assert second.delivery.delivered == 1 and delays == [0.05]
    (alert,) = list_alerts(warehouse)
    assert alert["last_notified_at"] is not None and alert["duplicates_suppressed"] == 0

    # A server that is not there: every attempt fails, with exponential backoff, then it gives up.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"HUB_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{closed}/hook?key=Kq8secret-in-url"}
    delays.clear()
    with warehouse.begin() as conn:
        conn.execute(sa.delete(tables.alerts))
    third = run_alerts(
        warehouse, parse_rules(rules), as_of=AS_OF, env=env, settings=settings, sleep=delays.append
    )
    assert third.delivery.failed == 1 and delays == [0.01, 0.02, 0.04]
    outcomes = [
        d["outcome"] for d in deliveries(warehouse) if d["evaluation_id"] == third.outcome.evaluation_id
    ]
    assert outcomes == ["retrying", "retrying", "retrying", "failed"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Kq8secret-in-url" not in logged


def test_channels_without_configuration_are_recorded_not_failed(warehouse):
    _anomaly(warehouse)
    run = run_alerts(warehouse, parse_rules(RULES), as_of=AS_OF, env={})
    assert run.delivery.not_configured == 3 and run.delivery.failed == 0
    (alert,) = list_alerts(warehouse)
    rows = deliveries(warehouse, alert["alert_id"])
    assert sorted((d["channel"], d["outcome"], d["error"]) for d in rows) == [
        ("hook", "not_configured", "HUB_ALERT_WEBHOOK_URL is not set"),
        ("mail", "not_configured", "HUB_SMTP_HOST is not set"),
        ("slack", "not_configured", "HUB_ALERT_SLACK_WEBHOOK_URL is not set"),
    ]
    assert alert["last_notified_at"] is not None  # nothing configured to wait for


def test_the_alerts_asset_delivers_through_its_resources(
    warehouse, http_server, smtp_server, tmp_path, monkeypatch
):
    handler, smtp_port = smtp_server
    http_server.script = {"/hook": [502]}
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("channels: [hook, slack, mail]", "channels: [hook, mail]"))
    _anomaly(warehouse)
    # Secrets bound with dg.EnvVar, as in production Definitions.
    monkeypatch.setenv("TEST_HOOK_URL", f"{http_server.url}/hook?key=Kq8secret-in-url")
    monkeypatch.setenv("TEST_SMTP_PORT", str(smtp_port))
    for name in ("HUB_ALERT_WEBHOOK_URL", "HUB_SMTP_HOST", "HUB_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    result = dg.materialize(
        [alerts_asset],
        resources={
            "warehouse": WarehouseResource(url=warehouse.url),
            "webhook_notifier": WebhookNotifierResource(url=dg.EnvVar("TEST_HOOK_URL")),
            "slack_notifier": SlackNotifierResource(),
            "email_notifier": EmailNotifierResource(host="127.0.0.1", port=dg.EnvVar.int("TEST_SMTP_PORT")),
        },
        run_config=dg.RunConfig(
            ops={
                "alerts": {
                    "config": {"rules_path": str(rules), "as_of": AS_OF.isoformat(), "backoff_s": 0.01}
                }
            }
        ),
        raise_on_error=True,
    )
    (materialization,) = result.asset_materializations_for_node("alerts")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["opened"] == 1 and metadata["notifications_delivered"] == 1
    assert metadata["delivery_attempts"] == 3 and metadata["active_alerts"] == 1
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"alert_rules_evaluated": True, "alert_deliveries_succeeded": True}
    assert [r["code"] for r in http_server.posts("/hook")] == [502, 200]
    assert len(handler.messages) == 1

    # A rules file with a mistake fails the run with the reason.
    rules.write_text("rules: [{id: x, type: threshold, metric: latency_ms, agg: p95, value: 1, for: 3x}]")
    with pytest.raises(Exception) as failure:  # noqa: B017 - dg.Failure, or Dagster's wrapper of it
        dg.materialize(
            [alerts_asset],
            resources={
                "warehouse": WarehouseResource(url=warehouse.url),
                "webhook_notifier": WebhookNotifierResource(),
                "slack_notifier": SlackNotifierResource(),
                "email_notifier": EmailNotifierResource(),
            },
            run_config=dg.RunConfig(ops={"alerts": {"config": {"rules_path": str(rules)}}}),
        )
    assert "'3x' is not a duration" in f"{failure.value} {failure.value.__cause__}"
