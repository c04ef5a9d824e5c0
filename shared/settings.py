"""Settings every service shares, read from the environment (DESIGN.md, Settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "uptake-development-secret-change-me!"  # noqa: S105 - refused outside development


class BaseServiceSettings(BaseSettings):
    """What every service reads. A service subclasses it and adds its own fields."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    environment: str = Field(default="development", alias="UPTAKE_ENV")
    data_dir: Path = Field(default=Path("var"), alias="UPTAKE_DATA_DIR")
    secret: str = Field(default=DEV_SECRET, alias="UPTAKE_SECRET", repr=False)
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_partitions: int = Field(default=6, alias="KAFKA_PARTITIONS", ge=1, le=1000)
    embedded_broker_port: int = Field(default=9092, alias="UPTAKE_BROKER_PORT")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_json: bool = Field(default=True, alias="LOG_JSON")
    opentelemetry: bool = Field(default=False, alias="UPTAKE_OPENTELEMETRY")
    public_base_url: str = Field(default="http://127.0.0.1:8004", alias="PUBLIC_BASE_URL")
    host: str = Field(default="127.0.0.1", alias="HOST")
    auto_migrate: bool = Field(default=True, alias="AUTO_MIGRATE")

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

    @model_validator(mode="after")
    def _refuse_dev_secret_in_production(self) -> BaseServiceSettings:
        if self.environment != "development" and self.secret == DEV_SECRET:
            raise ValueError("UPTAKE_SECRET must be set outside development (UPTAKE_ENV)")
        if len(self.secret) < 32:
            raise ValueError("UPTAKE_SECRET must be at least 32 characters (HMAC-SHA256 key)")
        return self

    def database_url(self, service: str) -> str:
        """``<SERVICE>_DATABASE_URL``, else the embedded default: a SQLite file in the data dir."""
        url: str | None = getattr(self, f"{service}_database_url")
        return url or f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port
