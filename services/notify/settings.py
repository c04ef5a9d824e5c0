"""Notify's own settings on top of the shared ones (SMTP, Slack, frequency cap, retries)."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from shared.settings import BaseServiceSettings

SLACK_WEBHOOK_HOSTS = frozenset({"hooks.slack.com"})


def webhook_allowed(url: str, api_base: str) -> bool:
    """Only Slack's own webhook host (https) or the configured API base: no arbitrary URLs."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname in SLACK_WEBHOOK_HOSTS and not parts.port:
        return True
    base = api_base.rstrip("/") + "/"
    return url.startswith(base) and ".." not in urlsplit(url).path


class NotifySettings(BaseServiceSettings):
    smtp_host: str | None = Field(default=None, alias="SMTP_HOST")
    smtp_port: int = Field(default=587, alias="SMTP_PORT", ge=1, le=65535)
    smtp_username: str | None = Field(default=None, alias="SMTP_USERNAME")
    smtp_password: str | None = Field(default=None, alias="SMTP_PASSWORD", repr=False)
    smtp_starttls: bool | None = Field(
        default=None, alias="SMTP_STARTTLS", description="None = upgrade when offered"
    )
    smtp_timeout_seconds: float = Field(default=30.0, alias="SMTP_TIMEOUT", gt=0)
    smtp_ca_file: Path | None = Field(
        default=None, alias="SMTP_CA_FILE", description="CA bundle for the SMTP server's cert"
    )
    email_from: str = Field(default="success@uptake.local", alias="EMAIL_FROM")
    unsubscribe_mailto: str | None = Field(default=None, alias="NOTIFY_UNSUBSCRIBE_MAILTO")

    slack_webhook_url: str | None = Field(default=None, alias="SLACK_WEBHOOK_URL", repr=False)
    slack_bot_token: str | None = Field(default=None, alias="SLACK_BOT_TOKEN", repr=False)
    slack_api_base: str = Field(default="https://slack.com/api", alias="SLACK_API_BASE")
    slack_default_channel: str = Field(default="#cs-alerts", alias="SLACK_DEFAULT_CHANNEL")
    slack_timeout_seconds: float = Field(default=10.0, alias="SLACK_TIMEOUT", gt=0)

    frequency_cap: int = Field(default=1, alias="NOTIFY_FREQUENCY_CAP", ge=0)
    frequency_cap_window_seconds: float = Field(
        default=86_400, alias="NOTIFY_FREQUENCY_CAP_WINDOW", gt=0
    )
    account_cap: int = Field(
        default=3, alias="NOTIFY_ACCOUNT_CAP", ge=0, description="automated emails per account"
    )
    account_cap_window_seconds: float = Field(
        default=604_800, alias="NOTIFY_ACCOUNT_CAP_WINDOW", gt=0
    )

    max_attempts: int = Field(default=8, alias="NOTIFY_MAX_ATTEMPTS", ge=1, le=100)
    retry_base_seconds: float = Field(default=30.0, alias="NOTIFY_RETRY_BASE", gt=0)
    retry_max_seconds: float = Field(default=3600.0, alias="NOTIFY_RETRY_MAX", gt=0)
    poll_interval_seconds: float = Field(default=1.0, alias="NOTIFY_POLL_INTERVAL", gt=0)
    send_lease_seconds: float = Field(
        default=30.0, alias="NOTIFY_SEND_LEASE", ge=1, description="renewed every third"
    )
    send_concurrency: int = Field(default=8, alias="NOTIFY_SEND_CONCURRENCY", ge=1, le=256)
    consumer_group: str = Field(default="notify", alias="NOTIFY_CONSUMER_GROUP")
    track_opens: bool = Field(default=True, alias="NOTIFY_TRACK_OPENS")
    track_clicks: bool = Field(default=True, alias="NOTIFY_TRACK_CLICKS")

    @field_validator("email_from")
    @classmethod
    def _email_from_has_address(cls, value: str) -> str:
        if "@" not in parseaddr(value)[1]:
            raise ValueError("EMAIL_FROM must contain an email address")
        return value

    @field_validator("slack_api_base")
    @classmethod
    def _api_base_is_http(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError("SLACK_API_BASE must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _smtp_is_consistent(self) -> NotifySettings:
        if self.smtp_port == 465 and self.smtp_starttls:
            raise ValueError(
                "SMTP_PORT=465 is implicit TLS (SMTPS): SMTP_STARTTLS=true cannot apply; "
                "unset SMTP_STARTTLS, or use port 587 for STARTTLS"
            )
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _webhook_is_slack(self) -> NotifySettings:
        if self.slack_webhook_url and not webhook_allowed(
            self.slack_webhook_url, self.slack_api_base
        ):
            raise ValueError("SLACK_WEBHOOK_URL must be on hooks.slack.com or SLACK_API_BASE")
        return self

    @property
    def links_are_https(self) -> bool:
        """RFC 8058 one-click unsubscribe needs an https link."""
        return urlsplit(self.public_base_url).scheme == "https"

    @property
    def sender_address(self) -> str:
        return parseaddr(self.email_from)[1]

    @property
    def sender_name(self) -> str:
        return parseaddr(self.email_from)[0]

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"
