"""Configuration: TICKETRELAY_* environment variables and the provider accounts file.

Secrets are SecretStr so that a repr, a log line or an error message never shows them.
"""

from __future__ import annotations

import os
import socket
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.envelope import PROVIDERS

# The sandbox's own keys: only ever used against the built-in simulators.
SANDBOX_API_KEY = "sandbox-key"
SANDBOX_FOURVENUES_INTEGRATION_ID = "sandbox-integration"
SANDBOX_FOURVENUES_SECRET = "sandbox-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETRELAY_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "sqlite:///ticketrelay.db"
    intake_stream: str = "ticketrelay:bookings"
    results_stream: str = "ticketrelay:results"
    # reply_to must start with this prefix, so a message cannot make us write to any key.
    reply_to_prefix: str = "ticketrelay:results"
    dead_stream: str = "ticketrelay:dead"
    intake_group: str = "ticketrelay-intake"
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    accounts_file: Path | None = None
    sandbox_url: str = "http://127.0.0.1:8765"

    # Intake
    max_message_bytes: int = 256 * 1024
    intake_batch: int = 100
    intake_block_ms: int = 1000
    # After a read that did not fill a batch, wait this long and read once more: at a steady
    # 150 bookings/s, one read per entry meant one Celery task per booking, which cost the
    # worker twice the CPU of a batched one (measured). 0 turns it off.
    intake_linger_ms: int = Field(default=20, ge=0, le=1000)
    # An entry pending this long in the group (its consumer died) is taken over by another.
    intake_reclaim_idle_ms: int = 30_000

    # Celery
    queue: str = "ticketrelay"
    # Bulk re-issuance tasks travel on their own queue (see worker/ops/reissue.py).
    bulk_queue: str = "ticketrelay.bulk"
    visibility_timeout_s: int = 600
    task_time_limit_s: int = 120
    worker_concurrency: int = 32
    # Keys per issue task at most. Intake sends the keys it read together in one task, so a
    # busy stream pays Celery's per-message cost (about 2 ms of worker CPU: the fetch, the ack
    # and three task events) once per batch; a quiet one still sends one key per task.
    task_batch: int = Field(default=16, ge=1, le=500)
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    soft_shutdown_timeout_s: float = 20.0

    # Work on one booking
    lease_s: float = 90.0  # a claimed row nobody finished is free again after this
    max_countdown_s: float = 60.0  # longer waits are parked in next_attempt_at for the sweeper
    default_timeout_s: float = 15.0
    default_max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0

    # Rate limits applied to every account that sets none of its own (None: no limit).
    default_rate_limit_per_s: float | None = None
    default_max_concurrent: int | None = None

    # Bulk re-issuance
    # Cron expression (UTC) of the nightly run, or "off".
    reissue_schedule: str = "0 3 * * *"
    # What the nightly run selects: space-separated key=value (see `ticketrelay reissue --help`).
    reissue_selection: str = "status=failed retryable=true since=24h"
    # Rows of a run in flight at once: the feeder tops the bulk queue up to this.
    reissue_window: int = 200

    # Sweeper (Celery beat)
    sweep_interval_s: float = 15.0
    stale_after_s: float = 60.0  # a queued row untouched this long is enqueued again
    sweep_batch: int = 500

    # Metrics (`ticketrelay metrics`, worker/ops/metrics_server.py). The exporter listens on
    # localhost unless told otherwise: set TICKETRELAY_METRICS_HOST=0.0.0.0 for a scraper on
    # another host. Event counters of all processes are added up in the Redis hash metrics_key.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9808
    metrics_key: str = "ticketrelay:metrics"

    # Retention (worker/retention.py): Redis runs with noeviction, so a stream that only grows
    # ends with a Redis that refuses writes. Caps are approximate entry counts, 0: unbounded;
    # SQL stays the record, so a result trimmed away can be republished from its row.
    results_maxlen: int = Field(default=1_000_000, ge=0)
    dead_maxlen: int = Field(default=100_000, ge=0)
    # How often intake drops the bookings entries every group has acknowledged (personal data
    # with no further use) and caps the dead stream it writes. 0 turns it off.
    intake_trim_interval_s: float = Field(default=10.0, ge=0)

    # TLS to Redis (`rediss://` URLs, docs/security.md): the CA file that signed the server's
    # certificate, for a private CA; unset: the system's CAs. The certificate and the host name
    # are verified either way. Used by every Redis client (worker.redis_clients) and by Celery.
    redis_tls_ca_file: Path | None = None

    # Signed HTTP callbacks (worker/webhooks, docs/webhooks.md). Hosts are comma-separated
    # names ("*.example.com" takes subdomains); a callback goes only to an allowed host, over
    # https unless the host is also in callback_http_hosts (e.g. 127.0.0.1 for a local test).
    callback_allowed_hosts: str = ""
    callback_http_hosts: str = ""
    callback_interval_s: float = Field(default=5.0, gt=0)  # beat runs the deliverer this often
    callback_batch: int = Field(default=50, ge=1, le=1000)  # entries claimed per run
    callback_concurrency: int = Field(default=8, ge=1, le=64)  # receivers served side by side
    callback_connect_timeout_s: float = Field(default=3.0, gt=0)
    callback_timeout_s: float = Field(default=10.0, gt=0)
    callback_lease_s: float = Field(default=60.0, gt=0)
    callback_backoff_base_s: float = Field(default=5.0, gt=0)
    callback_backoff_cap_s: float = Field(default=21600.0, gt=0)
    callback_max_attempts: int = Field(default=20, ge=1)
    callback_max_age_h: float = Field(default=72.0, gt=0)
    # Delivered entries (their bodies hold personal data) are deleted after this; 0 keeps them.
    # Dead ones stay until replayed or purged by an operator.
    callback_keep_delivered_h: float = Field(default=168.0, ge=0)

    @field_validator("callback_lease_s")
    @classmethod
    def _lease_outlasts_a_request(cls, value: float, info: Any) -> float:  # pydantic's ValidationInfo
        # A send starts only while a whole request still fits in the lease (worker/webhooks).
        request_s = info.data.get("callback_connect_timeout_s", 0) + info.data.get("callback_timeout_s", 0)
        if value < request_s + 5:
            raise ValueError("must exceed callback_connect_timeout_s + callback_timeout_s by 5 s at least")
        return value

    @field_validator("reply_to_prefix", "intake_stream", "results_stream", "dead_stream", "metrics_key")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value


class AccountConfig(BaseModel):
    """One credential set of one provider (a table `[provider.account]` of the accounts file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    name: str
    base_url: str
    api_key: SecretStr | None = None
    auth: Literal["v1", "v2"] = "v2"  # Fourvenues Integrations API only
    integration_id: SecretStr | None = None  # Fourvenues auth v1
    secret: SecretStr | None = None  # Fourvenues auth v1
    timeout_s: float = 15.0
    max_attempts: int = Field(8, ge=1, le=100)
    rate_limit_per_s: float | None = None
    max_concurrent: int | None = Field(None, ge=1)
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0

    # Signed HTTP callbacks (worker/webhooks): results of this account are also POSTed here.
    # callback_secret: "whsec_..." or "env:NAME", or a list of them while rotating (the first
    # is the new one; every one signs). Checked by worker.webhooks.config, never here by
    # raising: a validation error would print the value.
    callback_url: str | None = None
    callback_secret: tuple[SecretStr, ...] = ()

    @field_validator("callback_secret", mode="before")
    @classmethod
    def _callback_secrets(cls, value: object) -> tuple[SecretStr, ...]:
        items = value if isinstance(value, (list, tuple)) else [value]
        found: list[SecretStr] = []
        for item in items:
            if isinstance(item, SecretStr):
                found.append(item)
            elif item is not None:
                resolved = _resolve_secret(str(item), "callback_secret")
                if resolved is not None:
                    found.append(resolved)
        return tuple(found)

    def missing_credentials(self) -> str | None:
        """Why this account cannot be used, or None. Names the setting, never its value."""
        if self.provider == "fourvenues" and self.auth == "v1":
            if self.integration_id is None or self.secret is None:
                return f"account {self.provider}.{self.name}: auth v1 needs integration_id and secret"
            return None
        if self.api_key is None or not self.api_key.get_secret_value():
            return f"account {self.provider}.{self.name}: api_key is not set"
        return None


class AccountsError(ValueError):
    pass


def _resolve_secret(value: object, where: str) -> SecretStr | None:
    """`env:NAME` reads the secret from the environment; an unset variable leaves it missing,
    so the account answers "missing credentials" instead of the process refusing to start."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AccountsError(f"{where}: must be a string")
    if value.startswith("env:"):
        found = os.environ.get(value[4:])
        return SecretStr(found) if found else None
    return SecretStr(value)


def _defaults(settings: Settings | None) -> dict[str, Any]:
    s = settings or Settings()
    return {
        "timeout_s": s.default_timeout_s,
        "max_attempts": s.default_max_attempts,
        "backoff_base_s": s.backoff_base_s,
        "backoff_cap_s": s.backoff_cap_s,
        "rate_limit_per_s": s.default_rate_limit_per_s,
        "max_concurrent": s.default_max_concurrent,
    }


def load_accounts(path: Path, settings: Settings | None = None) -> dict[tuple[str, str], AccountConfig]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AccountsError(f"cannot read accounts file {path}: {exc}") from None
    accounts: dict[tuple[str, str], AccountConfig] = {}
    for provider, tables in data.items():
        if provider not in PROVIDERS:
            raise AccountsError(f"{path}: unknown provider [{provider}]")
        if not isinstance(tables, dict):
            raise AccountsError(f"{path}: [{provider}] must hold tables [{provider}.ACCOUNT]")
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise AccountsError(f"{path}: [{provider}.{name}] must be a table")
            fields = {**_defaults(settings), **table}
            for secret_field in ("api_key", "integration_id", "secret"):
                fields[secret_field] = _resolve_secret(
                    fields.get(secret_field), f"[{provider}.{name}].{secret_field}"
                )
            try:
                accounts[(provider, name)] = AccountConfig(provider=provider, name=name, **fields)
            except ValueError as exc:
                raise AccountsError(f"{path}: [{provider}.{name}]: {exc}") from None
    return accounts


def sandbox_accounts(
    sandbox_url: str, settings: Settings | None = None
) -> dict[tuple[str, str], AccountConfig]:
    """The accounts used when no accounts file is configured: the built-in simulators."""
    base = sandbox_url.rstrip("/")
    key = SecretStr(SANDBOX_API_KEY)
    d = _defaults(settings)
    return {
        ("remypass", "default"): AccountConfig(
            **d, provider="remypass", name="default", base_url=f"{base}/remypass/api/v1/public", api_key=key
        ),
        ("fourvenues", "default"): AccountConfig(
            **d, provider="fourvenues", name="default", base_url=f"{base}/fourvenues", api_key=key
        ),
        ("fourvenues", "v1"): AccountConfig(
            **d,
            provider="fourvenues",
            name="v1",
            base_url=f"{base}/fourvenues",
            auth="v1",
            integration_id=SecretStr(SANDBOX_FOURVENUES_INTEGRATION_ID),
            secret=SecretStr(SANDBOX_FOURVENUES_SECRET),
        ),
        ("fourvenues_channels", "default"): AccountConfig(
            **d,
            provider="fourvenues_channels",
            name="default",
            base_url=f"{base}/fourvenues-channels",
            api_key=key,
        ),
        ("eguma", "default"): AccountConfig(
            **d, provider="eguma", name="default", base_url=f"{base}/eguma/v1", api_key=key
        ),
    }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def get_accounts(settings: Settings | None = None) -> dict[tuple[str, str], AccountConfig]:
    settings = settings or get_settings()
    if settings.accounts_file is None:
        return sandbox_accounts(settings.sandbox_url, settings)
    return load_accounts(settings.accounts_file, settings)
