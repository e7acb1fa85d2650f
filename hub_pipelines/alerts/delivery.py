"""Delivery of alert notifications: generic webhook (JSON), Slack-compatible incoming webhook, email
over SMTP; each with retries and exponential backoff, and a row in `alert_deliveries` for every
attempt.

URLs and secrets come from environment variables (or from the notifier resources, which read them
from the environment when used) and are never logged, stored or put in an error message: every
error text is scrubbed of them, and a transport's repr shows none of them.

| channel | variables |
|---|---|
| webhook | HUB_ALERT_WEBHOOK_URL (or the channel's `url_env`), optional HUB_ALERT_WEBHOOK_TOKEN (sent as `Authorization: Bearer`) and HUB_ALERT_WEBHOOK_SECRET (HMAC-SHA256 of the body in `X-Hub-Signature-256`) |
| slack | HUB_ALERT_SLACK_WEBHOOK_URL (or the channel's `url_env`) |
| email | HUB_SMTP_HOST, HUB_SMTP_PORT (587), HUB_SMTP_USERNAME, HUB_SMTP_PASSWORD, HUB_SMTP_FROM, HUB_SMTP_STARTTLS (true on port 587), HUB_SMTP_SSL |

Retried: connection failures and timeouts, HTTP 408, 425, 429 and 5xx (honouring Retry-After up to
the backoff cap), SMTP 4xx replies and dropped connections. Not retried: other HTTP 4xx, SMTP 5xx.
A channel whose variables are not set is recorded as `not_configured` and does not count as a
failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import smtplib
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from html import escape
from typing import Any

import sqlalchemy as sa

from hub_pipelines.alerts.lifecycle import LifecycleOutcome, Notification, mark_notified
from hub_pipelines.alerts.rules import Channel, RuleSet
from hub_pipelines.warehouse import tables
from hub_pipelines.warehouse.store import Warehouse

log = logging.getLogger(__name__)

WEBHOOK_URL_ENV = "HUB_ALERT_WEBHOOK_URL"
WEBHOOK_TOKEN_ENV = "HUB_ALERT_WEBHOOK_TOKEN"
WEBHOOK_SECRET_ENV = "HUB_ALERT_WEBHOOK_SECRET"
SLACK_URL_ENV = "HUB_ALERT_SLACK_WEBHOOK_URL"
SMTP_HOST_ENV = "HUB_SMTP_HOST"
SMTP_PORT_ENV = "HUB_SMTP_PORT"
SMTP_USERNAME_ENV = "HUB_SMTP_USERNAME"
SMTP_PASSWORD_ENV = "HUB_SMTP_PASSWORD"
SMTP_FROM_ENV = "HUB_SMTP_FROM"
SMTP_STARTTLS_ENV = "HUB_SMTP_STARTTLS"
SMTP_SSL_ENV = "HUB_SMTP_SSL"

DELIVERED, RETRYING, FAILED, NOT_CONFIGURED = "delivered", "retrying", "failed", "not_configured"
_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}


class DeliveryError(Exception):
    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None, retry_after=None):
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class DeliverySettings:
    """How to reach the channels and how hard to try. Unset values are read from the environment
    (see the module docstring) when a transport is built."""

    webhook_url: str | None = None
    webhook_token: str | None = None
    webhook_secret: str | None = None
    slack_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_sender: str | None = None
    smtp_starttls: bool | None = None
    smtp_ssl: bool | None = None
    timeout_s: float = 10.0
    max_attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0

    def __repr__(self) -> str:  # never show URLs or secrets
        return (
            f"DeliverySettings(max_attempts={self.max_attempts}, backoff_s={self.backoff_s},"
            f" backoff_max_s={self.backoff_max_s}, timeout_s={self.timeout_s})"
        )

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): exponential, capped; a server's
        Retry-After is honoured up to the cap."""
        delay = min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1)))
        if retry_after is not None:
            delay = min(self.backoff_max_s, max(delay, retry_after))
        return delay


# -- transports ------------------------------------------------------------------------------------


@dataclass
class Message:
    """A rendered notification: what every transport sends, in its own format."""

    kind: str
    alert: dict[str, Any]
    subject: str
    text: str
    html: str

    def webhook_payload(self) -> dict[str, Any]:
        return {"version": 1, "kind": self.kind, "summary": self.subject, "alert": self.alert}

    def slack_payload(self) -> dict[str, Any]:
        a = self.alert
        icon = ":white_check_mark:" if self.kind == "resolved" else _EMOJI.get(a["severity"], "")
        context = (
            f"alert `{a['alert_id']}` · rule `{a['rule_id']}` · tenant {a.get('tenant_id')} · "
            f"opened {a.get('opened_at')}"
            + ("" if self.kind == "resolved" else f" · acknowledge: `hub alerts ack {a['alert_id']}`")
        )
        return {
            "text": self.subject,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": self.subject[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {a['summary']}"[:3000]}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
        }


class Transport:
    channel_type = ""

    def __init__(self, channel: Channel, settings: DeliverySettings, secrets: tuple[str, ...]):
        self.channel = channel
        self.settings = settings
        self.secrets = tuple(s for s in secrets if s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channel={self.channel.name!r})"

    def send(self, message: Message) -> int | None:
        raise NotImplementedError

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


class _HttpTransport(Transport):
    def __init__(self, channel, settings, url: str, headers: dict[str, str], secrets):
        super().__init__(channel, settings, (url, *secrets))
        self._url = url
        self._headers = headers

    def _post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            self._url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "hub-alerts/1", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            detail = _read_snippet(exc)
            raise DeliveryError(
                f"HTTP {code} {exc.reason}" + (f": {detail}" if detail else ""),
                retryable=code in (408, 425, 429) or code >= 500,
                status_code=code,
                retry_after=retry_after,
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"connection failed: {reason}", retryable=True) from None


class WebhookTransport(_HttpTransport):
    channel_type = "webhook"

    def __init__(self, channel, settings, url: str, token: str | None = None, secret: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(channel, settings, url, headers, (token or "", secret or ""))
        self._secret = secret

    def send(self, message: Message) -> int:
        body = json.dumps(message.webhook_payload(), default=str, sort_keys=True).encode()
        headers = dict(self._headers)
        if self._secret:
            digest = hmac.new(self._secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = f"sha256={digest}"
        return self._post(body, headers)


class SlackTransport(_HttpTransport):
    channel_type = "slack"

    def __init__(self, channel, settings, url: str):
        super().__init__(channel, settings, url, {}, ())

    def send(self, message: Message) -> int:
        return self._post(json.dumps(message.slack_payload(), default=str).encode(), self._headers)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sender: str = "hub@localhost"
    starttls: bool = True
    use_ssl: bool = False


class EmailTransport(Transport):
    channel_type = "email"

    def __init__(self, channel, settings, smtp: SmtpSettings):
        super().__init__(channel, settings, (smtp.password or "",))
        self.smtp = smtp

    def send(self, message: Message) -> int:
        email = EmailMessage()
        email["Subject"] = f"{self.channel.subject_prefix} {message.subject}".strip()
        email["From"] = self.smtp.sender
        email["To"] = ", ".join(self.channel.to)
        email["X-Hub-Alert-Id"] = str(message.alert["alert_id"])
        email.set_content(message.text)
        email.add_alternative(message.html, subtype="html")
        try:
            if self.smtp.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.smtp.host, self.smtp.port, timeout=self.settings.timeout_s,
                    context=ssl.create_default_context(),
                )  # fmt: skip
            else:
                client = smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.settings.timeout_s)
            with client:
                if self.smtp.starttls and not self.smtp.use_ssl:
                    client.starttls(context=ssl.create_default_context())
                if self.smtp.username:
                    client.login(self.smtp.username, self.smtp.password or "")
                refused = client.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _msg in exc.recipients.values()]
            raise DeliveryError(
                f"SMTP refused every recipient ({', '.join(str(c) for c in codes)})",
                retryable=all(400 <= c < 500 for c in codes),
                status_code=codes[0] if codes else None,
            ) from None
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(
                f"SMTP {exc.smtp_code} {text}",
                retryable=400 <= exc.smtp_code < 500,
                status_code=exc.smtp_code,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"SMTP connection failed: {type(exc).__name__}: {exc}", retryable=True
            ) from None
        if refused:
            log.warning("email channel %s: %d recipients refused", self.channel.name, len(refused))
        return 250


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _read_snippet(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(200).decode(errors="replace").strip()
    except Exception:  # noqa: BLE001 - the body is a courtesy
        return ""


@dataclass(frozen=True)
class NotConfigured:
    reason: str


def build_transport(
    channel: Channel, settings: DeliverySettings, env: Mapping[str, str] | None = None
) -> Transport | NotConfigured:
    """The transport for a channel, from the settings and the environment (read now)."""
    env = os.environ if env is None else env
    if channel.type in ("webhook", "slack"):
        default_env = WEBHOOK_URL_ENV if channel.type == "webhook" else SLACK_URL_ENV
        configured = settings.webhook_url if channel.type == "webhook" else settings.slack_webhook_url
        if channel.url_env:
            url, source = env.get(channel.url_env), channel.url_env
        else:
            url, source = configured or env.get(default_env), default_env
        if not url:
            return NotConfigured(f"{source} is not set")
        if not url.lower().startswith(("http://", "https://")):
            return NotConfigured(f"{source} is not an http(s) URL")
        if channel.type == "slack":
            return SlackTransport(channel, settings, url)
        token = settings.webhook_token or env.get(WEBHOOK_TOKEN_ENV)
        secret = settings.webhook_secret or env.get(WEBHOOK_SECRET_ENV)
        return WebhookTransport(channel, settings, url, token=token, secret=secret)
    host = settings.smtp_host or env.get(SMTP_HOST_ENV)
    if not host:
        return NotConfigured(f"{SMTP_HOST_ENV} is not set")
    use_ssl = settings.smtp_ssl if settings.smtp_ssl is not None else _truthy(env.get(SMTP_SSL_ENV), False)
    port_text = settings.smtp_port or env.get(SMTP_PORT_ENV) or (465 if use_ssl else 587)
    try:
        port = int(port_text)
    except ValueError:
        return NotConfigured(f"{SMTP_PORT_ENV} is not a port number")
    starttls = (
        settings.smtp_starttls
        if settings.smtp_starttls is not None
        else _truthy(env.get(SMTP_STARTTLS_ENV), port == 587)
    )
    smtp = SmtpSettings(
        host=host,
        port=port,
        username=settings.smtp_username or env.get(SMTP_USERNAME_ENV),
        password=settings.smtp_password or env.get(SMTP_PASSWORD_ENV),
        sender=settings.smtp_sender or env.get(SMTP_FROM_ENV) or "hub@localhost",
        starttls=starttls,
        use_ssl=use_ssl,
    )
    return EmailTransport(channel, settings, smtp)


# -- rendering -------------------------------------------------------------------------------------


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """An alert or delivery row with ISO times and its JSON columns parsed."""
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        elif key in ("labels", "details") and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        out[key] = value
    return out


def render(notification: Notification, rule_title: str | None = None) -> Message:
    alert = jsonable(notification.alert)
    alert["rule_title"] = rule_title or alert["rule_id"]
    severity = str(alert["severity"]).upper()
    verb = {"opened": "firing", "reminder": "still firing", "resolved": "resolved"}[notification.kind]
    subject = f"{severity} {verb}: {alert['rule_title']} ({alert.get('tenant_id')})"
    labels = alert.get("labels") or {}
    lines = [
        subject,
        "",
        str(alert["summary"]),
        "",
        f"alert id:   {alert['alert_id']}",
        f"rule:       {alert['rule_id']} ({alert['rule_type']})",
        f"group:      {', '.join(f'{k}={v}' for k, v in labels.items())}",
        f"opened at:  {alert['opened_at']} (data time)",
        f"last fired: {alert['last_fired_at']}",
    ]
    if notification.kind == "resolved":
        lines.append(f"resolved:   {alert.get('resolved_at')}")
    else:
        lines += ["", f"Acknowledge with: hub alerts ack {alert['alert_id']}"]
    rows = "".join(
        f"<tr><th align='left'>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>"
        for k, v in [
            ("alert id", alert["alert_id"]),
            ("rule", f"{alert['rule_id']} ({alert['rule_type']})"),
            *labels.items(),
            ("opened at", alert["opened_at"]),
            ("last fired", alert["last_fired_at"]),
            *([("resolved", alert.get("resolved_at"))] if notification.kind == "resolved" else []),
        ]
    )
    html = (
        f"<html><body><h2>{escape(subject)}</h2><p>{escape(str(alert['summary']))}</p>"
        f"<table>{rows}</table></body></html>"
    )
    return Message(notification.kind, alert, subject, "\n".join(lines) + "\n", html)


# -- the delivery loop -------------------------------------------------------------------------------


@dataclass
class Attempt:
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: float
    attempted_at: datetime


@dataclass
class DeliveryReport:
    delivered: int = 0  # (notification, channel) pairs delivered
    failed: int = 0  # ... that exhausted their attempts or failed permanently
    not_configured: int = 0
    attempts: int = 0
    notifications_delivered: int = 0  # notifications delivered to every configured channel
    notifications_failed: int = 0


def send_with_retries(
    transport: Transport,
    message: Message,
    settings: DeliverySettings,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Attempt]:
    attempts: list[Attempt] = []
    for number in range(1, max(1, settings.max_attempts) + 1):
        started = time.perf_counter()
        at = datetime.now(UTC)
        try:
            status = transport.send(message)
        except DeliveryError as exc:
            last = number >= settings.max_attempts or not exc.retryable
            attempts.append(
                Attempt(
                    number,
                    FAILED if last else RETRYING,
                    exc.status_code,
                    transport.scrub(str(exc)),
                    (time.perf_counter() - started) * 1000,
                    at,
                )  # fmt: skip
            )
            if last:
                break
            sleep(settings.backoff(number, exc.retry_after))
            continue
        attempts.append(Attempt(number, DELIVERED, status, None, (time.perf_counter() - started) * 1000, at))
        break
    return attempts


def deliver(
    warehouse: Warehouse,
    outcome: LifecycleOutcome,
    ruleset: RuleSet,
    settings: DeliverySettings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    logger: logging.Logger | None = None,
) -> DeliveryReport:
    """Send every notification of an evaluation to its channels and record each attempt. A
    notification delivered to every configured channel marks its alert notified (the dedup
    window starts again); one that failed somewhere is sent again by the next evaluation."""
    settings = settings or DeliverySettings()
    logger = logger or log
    report = DeliveryReport()
    titles = {r.id: r.title for r in ruleset.rules}
    unconfigured: dict[tuple[str, str], int] = {}
    for notification in outcome.notifications:
        message = render(notification, titles.get(notification.alert["rule_id"]))
        complete = True
        rows = []
        for name in notification.channels:
            channel = ruleset.channel(name)
            transport = build_transport(channel, settings, env)
            if isinstance(transport, NotConfigured):
                report.not_configured += 1
                rows.append(_row(notification, outcome, channel, Attempt(
                    1, NOT_CONFIGURED, None, transport.reason, 0.0, datetime.now(UTC))))  # fmt: skip
                unconfigured[(name, transport.reason)] = unconfigured.get((name, transport.reason), 0) + 1
                continue
            attempts = send_with_retries(transport, message, settings, sleep)
            report.attempts += len(attempts)
            rows += [_row(notification, outcome, channel, a) for a in attempts]
            final = attempts[-1]
            if final.outcome == DELIVERED:
                report.delivered += 1
                logger.info(
                    "alert %s %s: delivered to %s (%s) after %d attempt(s)",
                    notification.alert["alert_id"], notification.kind, name, channel.type, len(attempts),
                )  # fmt: skip
            else:
                report.failed += 1
                complete = False
                logger.warning(
                    "alert %s %s: delivery to %s (%s) failed after %d attempt(s): %s",
                    notification.alert["alert_id"], notification.kind, name, channel.type, len(attempts), final.error,
                )  # fmt: skip
        if rows:
            with warehouse.begin() as conn:
                conn.execute(sa.insert(tables.alert_deliveries), rows)
        if complete:
            report.notifications_delivered += 1
            mark_notified(warehouse, notification.alert["alert_id"], outcome.as_of, notification.kind)
        else:
            report.notifications_failed += 1
    for (name, reason), count in sorted(unconfigured.items()):
        logger.warning(
            "channel %s is not configured (%s): %d notification(s) not sent to it", name, reason, count
        )
    return report


def _row(notification: Notification, outcome: LifecycleOutcome, channel: Channel, attempt: Attempt) -> dict:
    return {
        "attempt_id": uuid.uuid4().hex[:16],
        "alert_id": notification.alert["alert_id"],
        "evaluation_id": outcome.evaluation_id,
        "notification": notification.kind,
        "channel": channel.name,
        "channel_type": channel.type,
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
        "attempted_at": attempt.attempted_at,
    }
