"""The console's settings: where the four APIs are, and how long a sign-in lasts."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.settings import BaseServiceSettings


class ConsoleSettings(BaseServiceSettings):
    """Base URLs default to the services on this host at their configured ports."""

    ingest_url: str | None = Field(default=None, alias="INGEST_URL")
    health_url: str | None = Field(default=None, alias="HEALTH_URL")
    playbooks_url: str | None = Field(default=None, alias="PLAYBOOKS_URL")
    notify_url: str | None = Field(default=None, alias="NOTIFY_URL")
    session_hours: float = Field(default=12.0, alias="CONSOLE_SESSION_HOURS", gt=0, le=24 * 30)
    cookie_secure: bool | None = Field(
        default=None,
        alias="CONSOLE_COOKIE_SECURE",
        description="Secure cookie flag; None = on outside development",
    )
    dev_login: bool = Field(
        default=False,
        alias="CONSOLE_DEV_LOGIN",
        description="/login?token=... signs in from a link (development only)",
    )
    api_timeout_seconds: float = Field(default=15.0, alias="CONSOLE_API_TIMEOUT", gt=0)

    @model_validator(mode="after")
    def _dev_login_only_in_development(self) -> ConsoleSettings:
        if self.dev_login and self.environment != "development":
            raise ValueError("CONSOLE_DEV_LOGIN is for development only (UPTAKE_ENV)")
        return self

    def api_url(self, service: str) -> str:
        url: str | None = getattr(self, f"{service}_url")
        if url:
            return url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://{host}:{self.port(service)}"

    @property
    def secure_cookie(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return self.environment != "development"
