"""Notifier resources: how the `alerts` asset reaches webhooks, Slack and SMTP.

Every field is optional. A field left unset is read from its environment variable when the asset
runs (never at import), so the code location loads and runs with nothing configured (channels
then record `not_configured`). To pin a value in Definitions, bind it with `dg.EnvVar` so the secret
stays in the environment and out of run configuration and the UI:

    WebhookNotifierResource(url=dg.EnvVar("HUB_ALERT_WEBHOOK_URL"), token=dg.EnvVar("HUB_ALERT_WEBHOOK_TOKEN"))
    SlackNotifierResource(webhook_url=dg.EnvVar("HUB_ALERT_SLACK_WEBHOOK_URL"))
    EmailNotifierResource(host=dg.EnvVar("HUB_SMTP_HOST"), password=dg.EnvVar("HUB_SMTP_PASSWORD"))

(an EnvVar must be set wherever the asset runs: Dagster refuses to start a run otherwise). A rules
file channel with its own `url_env` reads that variable instead.
"""

import dagster as dg
from pydantic import Field

from hub_pipelines.alerts.delivery import DeliverySettings


class WebhookNotifierResource(dg.ConfigurableResource):
    """Generic JSON webhook. Unset: HUB_ALERT_WEBHOOK_URL, HUB_ALERT_WEBHOOK_TOKEN (Bearer),
    HUB_ALERT_WEBHOOK_SECRET (HMAC-SHA256 signature header)."""

    url: str | None = Field(default=None, description="unset: HUB_ALERT_WEBHOOK_URL at run time")
    token: str | None = Field(default=None, description="unset: HUB_ALERT_WEBHOOK_TOKEN at run time")
    secret: str | None = Field(default=None, description="unset: HUB_ALERT_WEBHOOK_SECRET at run time")


class SlackNotifierResource(dg.ConfigurableResource):
    """Slack-compatible incoming webhook. Unset: HUB_ALERT_SLACK_WEBHOOK_URL."""

    webhook_url: str | None = Field(
        default=None, description="unset: HUB_ALERT_SLACK_WEBHOOK_URL at run time"
    )


class EmailNotifierResource(dg.ConfigurableResource):
    """SMTP. Unset fields: HUB_SMTP_HOST, HUB_SMTP_PORT (587), HUB_SMTP_USERNAME, HUB_SMTP_PASSWORD,
    HUB_SMTP_FROM, HUB_SMTP_STARTTLS (true on 587), HUB_SMTP_SSL."""

    host: str | None = Field(default=None, description="unset: HUB_SMTP_HOST at run time")
    port: int | None = Field(default=None, description="unset: HUB_SMTP_PORT, else 587 (465 with ssl)")
    username: str | None = Field(default=None, description="unset: HUB_SMTP_USERNAME")
    password: str | None = Field(default=None, description="unset: HUB_SMTP_PASSWORD")
    sender: str | None = Field(default=None, description="From address; unset: HUB_SMTP_FROM")
    starttls: bool | None = Field(default=None, description="unset: HUB_SMTP_STARTTLS (true on port 587)")
    ssl: bool | None = Field(default=None, description="SMTP over TLS (port 465); unset: HUB_SMTP_SSL")


def delivery_settings(
    webhook: WebhookNotifierResource,
    slack: SlackNotifierResource,
    email: EmailNotifierResource,
    *,
    timeout_s: float = 10.0,
    max_attempts: int = 4,
    backoff_s: float = 0.5,
    backoff_max_s: float = 30.0,
) -> DeliverySettings:
    """The three resources (and the retry policy) as the plain-Python settings of
    hub_pipelines.alerts.delivery; the environment fills what they leave unset when a channel's
    transport is built."""
    return DeliverySettings(
        webhook_url=webhook.url,
        webhook_token=webhook.token,
        webhook_secret=webhook.secret,
        slack_webhook_url=slack.webhook_url,
        smtp_host=email.host,
        smtp_port=email.port,
        smtp_username=email.username,
        smtp_password=email.password,
        smtp_sender=email.sender,
        smtp_starttls=email.starttls,
        smtp_ssl=email.ssl,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
    )
