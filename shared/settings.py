"""Settings every service shares, read from the environment (DESIGN.md, Settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# here, not in shared.kafka: the CLI reads settings before it pays for aiokafka
DEFAULT_STALL_SECONDS = 120.0
DEV_SECRET = "uptake-development-secret-change-me!"  # noqa: S105 - refused outside development


class BaseServiceSettings(BaseSettings):
    """What every service reads. A service subclasses it and adds its own fields."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    environment: str = Field(default="development", alias="UPTAKE_ENV")
    data_dir: Path = Field(default=Path("var"), alias="UPTAKE_DATA_DIR")
    secret: str = Field(default=DEV_SECRET, alias="UPTAKE_SECRET", repr=False)
    # During a rotation: the old secret, still accepted to verify tokens (never to sign).
    secret_previous: str | None = Field(default=None, alias="UPTAKE_SECRET_PREVIOUS", repr=False)
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_partitions: int = Field(default=6, alias="KAFKA_PARTITIONS", ge=1, le=1000)
    embedded_broker_port: int = Field(default=9092, alias="UPTAKE_BROKER_PORT")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_json: bool = Field(default=True, alias="LOG_JSON")
    opentelemetry: bool = Field(default=False, alias="UPTAKE_OPENTELEMETRY")
    public_base_url: str = Field(default="http://127.0.0.1:8004", alias="PUBLIC_BASE_URL")
    host: str = Field(default="127.0.0.1", alias="HOST")
    auto_migrate: bool = Field(default=True, alias="AUTO_MIGRATE")
    # a consumer with lag that commits nothing this long fails /readyz (shared.kafka.progress)
    consumer_stall_seconds: float = Field(
        default=DEFAULT_STALL_SECONDS, alias="CONSUMER_STALL_SECONDS", gt=0
    )
    # ``uptake run`` on SIGTERM/Ctrl-C: how long consumers may take to reach the end of
    # their topics before the services and the broker stop anyway (shared/drain.py).
    drain_timeout: float = Field(default=60.0, alias="UPTAKE_DRAIN_TIMEOUT", ge=0)
    # Audit trail (shared/audit.py): rows older than this are pruned (at start, then hourly).
    audit_retention_days: int = Field(default=365, alias="AUDIT_RETENTION_DAYS", ge=1, le=36_500)
    # REST writes (non-GET behind a token) per token and replica: a bucket refilled at
    # API_WRITE_RATE per second holding at most API_WRITE_BURST; past it, 429 + Retry-After.
    api_write_rate: float = Field(default=20.0, alias="API_WRITE_RATE", gt=0)
    api_write_burst: float = Field(default=100.0, alias="API_WRITE_BURST", ge=1)
    # How often a service other than ingest sends its tokens' last uses (noted at most once
    # a minute each) to ingest's registry, on auth.token-uses.v1 (shared/tokenuse.py).
    token_usage_report_interval: float = Field(
        default=10.0, alias="TOKEN_USAGE_REPORT_INTERVAL", gt=0
    )

    ingest_database_url: str | None = Field(default=None, alias="INGEST_DATABASE_URL", repr=False)
    health_database_url: str | None = Field(default=None, alias="HEALTH_DATABASE_URL", repr=False)
    playbooks_database_url: str | None = Field(
        default=None, alias="PLAYBOOKS_DATABASE_URL", repr=False
    )
    notify_database_url: str | None = Field(default=None, alias="NOTIFY_DATABASE_URL", repr=False)
    ingest_port: int = Field(default=8001, alias="INGEST_PORT")
    health_port: int = Field(default=8002, alias="HEALTH_PORT")
    playbooks_port: int = Field(default=8003, alias="PLAYBOOKS_PORT")
    notify_port: int = Field(default=8004, alias="NOTIFY_PORT")
    console_port: int = Field(default=8005, alias="CONSOLE_PORT")

    @field_validator("secret_previous", mode="before")
    @classmethod
    def _empty_previous_is_none(cls, value: object) -> object:
        """``UPTAKE_SECRET_PREVIOUS=`` (compose's default, a blanked Secret key) = unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_dev_secret_in_production(self) -> BaseServiceSettings:
        if self.environment != "development" and self.secret == DEV_SECRET:
            raise ValueError("UPTAKE_SECRET must be set outside development (UPTAKE_ENV)")
        if len(self.secret) < 32:
            raise ValueError("UPTAKE_SECRET must be at least 32 characters (HMAC-SHA256 key)")
        if self.secret_previous is not None and len(self.secret_previous) < 32:
            raise ValueError("UPTAKE_SECRET_PREVIOUS must be at least 32 characters (or unset)")
        return self

    def database_url(self, service: str) -> str:
        """``<SERVICE>_DATABASE_URL``, else the embedded default: a SQLite file in the data dir."""
        url: str | None = getattr(self, f"{service}_database_url")
        return url or f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port
