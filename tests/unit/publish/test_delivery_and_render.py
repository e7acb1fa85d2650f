"""Delivery settings and messages, and report rendering, without servers or a warehouse."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

from hub_pipelines.alerts import DeliverySettings, build_transport, parse_rules
from hub_pipelines.alerts.delivery import NotConfigured, SlackTransport, WebhookTransport, render
from hub_pipelines.alerts.lifecycle import Notification
from hub_pipelines.reports import (
    Chart,
    Note,
    Paragraph,
    Report,
    Section,
    Table,
    to_html,
    to_markdown,
    write_report,
)
from hub_pipelines.reports.base import fmt_change, fmt_count, fmt_number, fmt_pct, fmt_usd
from hub_pipelines.reports.charts import bar_chart, forecast_chart, line_chart
from hub_pipelines.reports.render import safe_name

CHANNELS = parse_rules(
    """
channels:
  - {name: hook, type: webhook}
  - {name: team-hook, type: webhook, url_env: TEAM_HOOK_URL}
  - {name: slack, type: slack}
  - {name: mail, type: email, to: [a@example.com]}
"""
)


def test_backoff_is_exponential_capped_and_honours_retry_after():
    settings = DeliverySettings(backoff_s=0.5, backoff_max_s=3.0)
    assert [settings.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert settings.backoff(1, retry_after=2.5) == 2.5
    assert settings.backoff(1, retry_after=60) == 3.0


def test_transports_come_from_settings_then_the_environment():
    env = {
        "HUB_ALERT_WEBHOOK_URL": "https://hooks.example.com/a?token=s3cret",
        "TEAM_HOOK_URL": "https://team.example.com/b",
        "HUB_ALERT_SLACK_WEBHOOK_URL": "ftp://wrong",
        "HUB_SMTP_HOST": "smtp.example.com",
        "HUB_SMTP_PASSWORD": "pw-s3cret",
    }
    hook = build_transport(CHANNELS.channel("hook"), DeliverySettings(), env)
    assert isinstance(hook, WebhookTransport) and "s3cret" not in repr(hook)
    assert hook.scrub("failed for https://hooks.example.com/a?token=s3cret") == "failed for ***"
    pinned = build_transport(
        CHANNELS.channel("hook"), DeliverySettings(webhook_url="https://pinned.example.com"), env
    )
    assert pinned._url == "https://pinned.example.com"
    team = build_transport(CHANNELS.channel("team-hook"), DeliverySettings(webhook_url="https://pinned"), env)
    assert team._url == "https://team.example.com/b"  # the channel's own variable wins
    assert build_transport(CHANNELS.channel("slack"), DeliverySettings(), env) == NotConfigured(
        "HUB_ALERT_SLACK_WEBHOOK_URL is not an http(s) URL"
    )
    assert isinstance(
        build_transport(CHANNELS.channel("slack"), DeliverySettings(slack_webhook_url="https://s"), env),
        SlackTransport,
    )
    mail = build_transport(CHANNELS.channel("mail"), DeliverySettings(), env)
    assert (mail.smtp.host, mail.smtp.port, mail.smtp.starttls, mail.smtp.sender) == (
        "smtp.example.com", 587, True, "hub@localhost",
    )  # fmt: skip
    assert "pw-s3cret" not in repr(mail) and mail.scrub("auth pw-s3cret refused") == "auth *** refused"
    plain = build_transport(CHANNELS.channel("mail"), DeliverySettings(), env | {"HUB_SMTP_PORT": "2525"})
    assert (plain.smtp.port, plain.smtp.starttls) == (2525, False)
    assert build_transport(CHANNELS.channel("mail"), DeliverySettings(), {}) == NotConfigured(
        "HUB_SMTP_HOST is not set"
    )
    assert build_transport(
        CHANNELS.channel("mail"), DeliverySettings(), env | {"HUB_SMTP_PORT": "x"}
    ) == NotConfigured("HUB_SMTP_PORT is not a port number")


ALERT = {
    "alert_id": "0123456789ab",
    "rule_id": "threat-burst",
    "rule_type": "threshold",
    "severity": "critical",
    "tenant_id": "tenant-01",
    "labels": json.dumps({"tenant_id": "tenant-01"}),
    "status": "open",
    "summary": "threats sum >= 8 for 1h for tenant-01; last 1h buckets: 20",
    "details": json.dumps({"values": [20.0]}),
    "value": 20.0,
    "threshold": 8.0,
    "opened_at": datetime(2026, 11, 19, 16, tzinfo=UTC),
    "last_fired_at": datetime(2026, 11, 19, 16, tzinfo=UTC),
    "resolved_at": None,
}


def test_messages_for_webhook_slack_and_email():
    message = render(Notification("opened", ALERT, ["hook"]), "Burst of security detections")
    assert message.subject == "CRITICAL firing: Burst of security detections (tenant-01)"
    payload = message.webhook_payload()
    assert payload["kind"] == "opened" and payload["alert"]["labels"] == {"tenant_id": "tenant-01"}
    assert payload["alert"]["opened_at"] == "2026-11-19T16:00:00+00:00"
    json.dumps(payload)  # serialisable as it is sent
    slack = message.slack_payload()
    assert slack["text"] == message.subject
    assert "hub alerts ack 0123456789ab" in json.dumps(slack)
    assert "Acknowledge with: hub alerts ack 0123456789ab" in message.text
    assert "<h2>CRITICAL firing" in message.html
    resolved = render(Notification("resolved", ALERT | {"resolved_at": ALERT["opened_at"]}, []))
    assert resolved.subject.startswith("CRITICAL resolved: threat-burst") and "ack" not in json.dumps(
        resolved.slack_payload()
    )


def test_number_formats():
    assert fmt_count(1234567.4) == "1,234,567" and fmt_count(None) == "n/a"
    assert [fmt_usd(v) for v in (1234.5, 24.99895, 0.0099557)] == ["$1,234.50", "$24.9990", "$0.009956"]
    assert fmt_pct(0.97202) == "97.20%" and fmt_pct(float("nan")) == "n/a"
    assert [fmt_number(v) for v in (12578.54, 3.14159, 0.123456)] == ["12,578.5", "3.142", "0.12346"]
    assert fmt_change(110, 100) == "+10.0%" and fmt_change(1, 0) == "n/a" and fmt_change(None, 3) == "n/a"


def _report() -> Report:
    png = line_chart({"a": ([datetime(2026, 11, 19, h, tzinfo=UTC) for h in range(3)], [1, 3, 2])}, title="t")
    return Report(
        "operations",
        "Operations summary",
        "tenant/01",
        date(2026, 11, 19),
        datetime(2026, 11, 20, 1, tzinfo=UTC),
        [
            Section(
                "headline",
                "Headline",
                [
                    Paragraph("Traffic & <costs>"),
                    Table(["measure", "value"], [["a|b", "1,234"]]),
                    Note("careful"),
                    Chart("requests", "Requests per hour", png),
                ],
            )
        ],
    )


def test_markdown_and_html_show_the_same_blocks(tmp_path):
    report = _report()
    markdown = to_markdown(report)
    assert "# Operations summary · tenant/01 · 2026-11-19" in markdown
    assert "| measure | value |\n|---|---:|\n| a\\|b | 1,234 |" in markdown
    assert (
        "> **Note:** careful" in markdown and "_Chart: Requests per hour (in the HTML report)._" in markdown
    )
    page = to_html(report)
    assert "Traffic &amp; &lt;costs&gt;" in page  # escaped
    assert '<td class="num">1,234</td>' in page
    data = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "http://" not in page and "https://" not in page
    written = write_report(report, tmp_path)
    assert written.html == tmp_path / "tenant_01" / "2026-11-19" / "operations.html"
    assert "![Requests per hour](operations_charts/requests.png)" in written.markdown.read_text()
    assert (
        (written.markdown.parent / "operations_charts" / "requests.png").read_bytes().startswith(b"\x89PNG")
    )


def test_charts_render_empty_and_full():
    moments = [datetime(2026, 11, 19, h, tzinfo=UTC) for h in range(24)]
    for png in (
        line_chart({}, title="nothing"),
        bar_chart([], {}, title="nothing"),
        bar_chart(["a", "b"], {"x": [1, 2], "y": [3, 4]}, title="stacked", horizontal=True),
        forecast_chart(
            (moments[:12], list(range(12))),
            (moments[12:], [5] * 12, [4] * 12, [6] * 12),
            title="f",
            as_of=moments[12],
        ),  # fmt: skip
        forecast_chart(([], []), ([], [], [], []), title="empty"),
    ):
        assert png.startswith(b"\x89PNG") and len(png) > 2000
    assert safe_name("tenant/01 x") == "tenant_01_x" and safe_name("..") == "_"
