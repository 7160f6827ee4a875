"""Configuration: TICKETRELAY_* environment variables and the provider accounts file.

Secrets are SecretStr so that a repr, a log line or an error message never shows them; the
Redis and database URLs keep their password out of every repr (`mask_url` for printing them).
An accounts-file error names the file, the account and the key, never a value.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.envelope import PROVIDERS
from schemas.errors import describe

# The sandbox's own keys: only ever used against the built-in simulators.
SANDBOX_API_KEY = "sandbox-key"
SANDBOX_FOURVENUES_INTEGRATION_ID = "sandbox-integration"
SANDBOX_FOURVENUES_SECRET = "sandbox-secret"

_PASSWORD_PARAMS = {"password", "passwd", "pwd", "sslpassword"}


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or a `password=` query parameter) shown as
    ***, for anything printed or logged. Not a URL at all: returned as it is."""
    text = str(url)
    try:
        parts = urlsplit(text)
        if "@" in parts.netloc:
            userinfo, host = parts.netloc.rsplit("@", 1)
            if ":" in userinfo:
                text = text.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:***@{host}", 1)
        if parts.query:
            pairs = parse_qsl(parts.query, keep_blank_values=True)
            if any(k.lower() in _PASSWORD_PARAMS for k, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() in _PASSWORD_PARAMS else v) for k, v in pairs], safe="*"
                )
                text = text.replace("?" + parts.query, "?" + query, 1)
    except ValueError:
        return "<unparseable URL>"
    return text


class MaskedUrl(str):
    """A connection URL that is itself (clients connect with it) but whose repr hides the
    password, so that a repr of the settings, a traceback's locals or a debug log do not."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_url(self))

    @property
    def masked(self) -> str:
        return mask_url(self)


class LogSettings(BaseSettings):
    """The settings logging needs, on their own: logging is set up before anything else, so an
    invalid unrelated variable (say TICKETRELAY_LEASE_S=abc) must not stop it, or that error
    could not be reported. Settings inherits these fields, so they are read the same way."""

    model_config = SettingsConfigDict(env_prefix="TICKETRELAY_", extra="ignore")

    log_level: str = "INFO"
    log_format: str = "json"  # anything else: plain text lines, for humans


class Settings(LogSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETRELAY_", extra="ignore")

    # Where the processes keep their files: heartbeats for the probes, beat's schedule.
    state_dir: Path = Path(".ticketrelay")
    # Flower's port under `ticketrelay dev`.
    flower_port: int = Field(default=5555, ge=1, le=65535)

    redis_url: str = MaskedUrl("redis://127.0.0.1:6379/0")
    database_url: str = MaskedUrl("sqlite:///ticketrelay.db")
    # Connection budget (docs/operations.md#connection-budget): every process keeps at most
    # pool_size + max_overflow connections, and work that finds them all busy waits up to
    # pool_timeout_s for one instead of failing. With the group commit, a worker's hot writes
    # share one connection: a few more serve its reads.
    database_pool_size: int = Field(default=8, ge=1, le=200)
    database_max_overflow: int = Field(default=2, ge=0, le=200)
    database_pool_timeout_s: float = Field(default=30.0, gt=0)
    # A connection PostgreSQL refuses for now (too many clients, starting up or shutting down,
    # nothing listening) is tried again with backoff for up to this long before the error
    # reaches the work; 0: not retried.
    database_connect_wait_s: float = Field(default=30.0, ge=0)
    # Behind PgBouncer in transaction pooling mode: no server-side prepared statements (a
    # statement prepared on one server connection is unknown on the next), and no start-up
    # check of max_connections (the pooler's own pool is the budget then).
    database_transaction_pooler: bool = False
    intake_stream: str = "ticketrelay:bookings"
    results_stream: str = "ticketrelay:results"
    # reply_to must start with this prefix, so a message cannot make us write to any key.
    reply_to_prefix: str = "ticketrelay:results"
    dead_stream: str = "ticketrelay:dead"
    intake_group: str = "ticketrelay-intake"
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    accounts_file: Path | None = None
    # Without an accounts file, intake, worker and beat run against the built-in simulators only
    # when this says so (TICKETRELAY_SANDBOX=1): never by default, so real bookings cannot be
    # "issued" against a fake by a missing setting.
    sandbox: bool = False
    sandbox_url: str = "http://127.0.0.1:8765"

    # Intake
    max_message_bytes: int = 256 * 1024
    intake_batch: int = 100
    intake_block_ms: int = 1000
    # After a read that did not fill a batch, wait this long and read once more: at a steady
    # 150 bookings/s, one read per entry meant one Celery task per booking, which cost the
    # worker twice the CPU of a batched one (measured). 0 turns it off. 5 ms since the worker
    # writes by group commit: measured against 20 ms in one benchmark session, it gave more
    # throughput at 0 and 250 ms and an open-loop p99 of 93 ms instead of 162 ms.
    intake_linger_ms: int = Field(default=5, ge=0, le=1000)
    # An entry pending this long in the group (its consumer died) is taken over by another.
    intake_reclaim_idle_ms: int = 30_000

    # Celery
    queue: str = "ticketrelay"
    # Bulk re-issuance tasks travel on their own queue (see worker/ops/reissue.py).
    bulk_queue: str = "ticketrelay.bulk"
    visibility_timeout_s: int = 600
    task_time_limit_s: int = 120
    # Calls in flight per worker process (the threads that run a batch's keys; Celery's own
    # thread pool has as many). 128 by measurement (bench/RESULTS.md): at 250 ms of provider
    # latency 64 threads capped a process at 256 calls/s and 256 threads cost more CPU per
    # booking at 0 ms; 128 was within noise of the best of both.
    worker_concurrency: int = Field(default=128, ge=1, le=1024)
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
    # Provider outages (docs/outages.md): a circuit breaker per account, and a booking gives
    # up by time as well as by attempts (None: no time limit).
    breaker_enabled: bool = True
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=5.0, gt=0)
    breaker_max_open_s: float = Field(default=60.0, gt=0)
    default_give_up_after_s: float | None = Field(default=86400.0, gt=0)
    # Attempt history (ticket_attempts) older than this is deleted by the sweeper; 0: kept as
    # long as its issuance.
    attempts_retention_s: float = Field(default=90 * 86400.0, ge=0)

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
    # `ticketrelay metrics` reads the stores at most once per this many seconds.
    metrics_cache_s: float = Field(default=5.0, ge=0, le=300)
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

    # --- Retention of personal data and entry sizes (docs/data-protection.md) --------------
    # A final row's payload (the customer's personal data) is set to NULL this many days after
    # completed_at; payload_sha256 stays, so a resend is still recognised. 0 keeps payloads.
    payload_retention_days: float = Field(default=30.0, ge=0)
    # Final rows are deleted (with their attempts and webhook outbox entries) this many days
    # after completed_at. 0 (the default) keeps rows: they are the record of what was issued.
    row_retention_days: float = Field(default=0.0, ge=0)
    # Entries older than this leave the dead-letter and results streams (besides the MAXLEN
    # caps above). Dead letters hold whole rejected messages; results hold ticket codes.
    dead_max_age_days: float = Field(default=30.0, ge=0)
    results_max_age_days: float = Field(default=7.0, ge=0)
    # Beat runs the retention task this often (0: not scheduled), each statement touching at
    # most retention_batch rows, and at most retention_max_batches of them per run.
    retention_interval_s: float = Field(default=600.0, ge=0)
    retention_batch: int = Field(default=500, ge=1, le=10_000)
    retention_max_batches: int = Field(default=20, ge=1)
    # What one intake read may hold: entries are taken until their fields add up to this
    # (always at least one). An entry above max_message_bytes + intake_entry_slack_bytes is
    # dead-lettered from its sizes and first bytes, its body never leaves Redis.
    intake_read_budget_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)
    intake_entry_slack_bytes: int = Field(default=16 * 1024, ge=0)

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

    @field_validator("redis_url", "database_url")
    @classmethod
    def _masked(cls, value: str) -> str:
        return MaskedUrl(value)


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
    # A simulator, not the provider: plain http is allowed and every result says "sandbox": true.
    sandbox: bool = False
    # Fourvenues: whether this account keeps the qr_codes we send as the tickets' codes (the docs
    # do not say). Unset: learned from the account's own answers; true lets a lost answer be
    # settled by code from the first booking on (docs/providers.md).
    qr_codes_kept: bool | None = None
    give_up_after_s: float | None = Field(86400.0, gt=0)  # docs/outages.md

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


class NoAccountsConfigured(AccountsError):
    """Neither an accounts file nor an explicit choice of the sandbox."""


NO_ACCOUNTS_MESSAGE = (
    "no provider accounts: set TICKETRELAY_ACCOUNTS_FILE to the accounts file (TOML), or "
    "TICKETRELAY_SANDBOX=1 to run against the built-in provider sandbox (no real tickets)"
)

# The keys an accounts-file table may hold: AccountConfig's fields but the two the table's
# name gives.
ACCOUNT_KEYS = tuple(f for f in AccountConfig.model_fields if f not in ("provider", "name"))
_SECRET_FIELDS = ("api_key", "integration_id", "secret")


def _suggestion(key: str, choices: tuple[str, ...] | frozenset[str]) -> str:
    # The provider docs' own spelling ("apikey") and plain typos are near misses.
    folded = {c.replace("_", "").lower(): c for c in choices}
    match = folded.get(key.replace("_", "").replace("-", "").lower())
    if match is None:
        close = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
        match = close[0] if close else None
    return f"; did you mean '{match}'?" if match else ""


def _secret_file(ref: str, where: str, accounts_file: Path | None) -> str:
    """`file:PATH`: the secret is the file's content less one trailing newline (Docker and
    Kubernetes secrets, systemd LoadCredential=). A relative PATH is looked up in systemd's
    $CREDENTIALS_DIRECTORY when set, else beside the accounts file."""
    path = Path(ref)
    if not path.is_absolute():
        base = os.environ.get("CREDENTIALS_DIRECTORY") or (accounts_file.parent if accounts_file else None)
        if base:
            path = Path(base) / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise AccountsError(f"{where}: cannot read the secret file {path} ({why})") from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _resolve_secret(value: object, where: str, accounts_file: Path | None = None) -> SecretStr | None:
    """`env:NAME` reads the secret from the environment; an unset variable leaves it missing,
    so the account answers "missing credentials" instead of the process refusing to start.
    `file:PATH` reads it from a file, which must exist. Anything else is the secret itself."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AccountsError(f"{where}: must be a string")
    if value.startswith("env:"):
        found = os.environ.get(value[4:])
        return SecretStr(found) if found else None
    if value.startswith("file:"):
        return SecretStr(_secret_file(value[5:], where, accounts_file))
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
        "give_up_after_s": s.default_give_up_after_s,
    }


def _account(
    path: Path, provider: str, name: str, table: dict[str, Any], settings: Settings | None
) -> AccountConfig:
    where = f"[{provider}.{name}]"
    for key in table:
        if key not in ACCOUNT_KEYS:
            raise AccountsError(
                f"{path}: unknown key '{key}' in {where}{_suggestion(str(key), ACCOUNT_KEYS)}"
            )
    fields = {**_defaults(settings), **table}
    for secret_field in _SECRET_FIELDS:
        fields[secret_field] = _resolve_secret(
            fields.get(secret_field), f"{path}: {where}.{secret_field}", path
        )
    try:
        account = AccountConfig(provider=provider, name=name, **fields)
    except ValidationError as exc:
        # describe() leaves the input out: pydantic's own text would print the value.
        raise AccountsError(f"{path}: {where}: {describe(exc, known=frozenset(ACCOUNT_KEYS))}") from None
    if not account.sandbox and urlsplit(account.base_url).scheme != "https":
        raise AccountsError(
            f"{path}: {where}: base_url must be an https:// URL (credentials travel with every "
            "call); set sandbox = true for a local simulator"
        )
    return account


def load_accounts(path: Path, settings: Settings | None = None) -> dict[tuple[str, str], AccountConfig]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise AccountsError(
            f"cannot read accounts file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise AccountsError(f"cannot read accounts file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib gives the line and column, and for a bad character the character itself:
        # that character may sit inside a secret, so it is left out.
        why = re.sub(r"(character) '(?:[^'\\]|\\.)*'", r"\1", str(exc))
        raise AccountsError(f"cannot read accounts file {path}: not valid TOML: {why}") from None
    accounts: dict[tuple[str, str], AccountConfig] = {}
    for provider, tables in data.items():
        if provider not in PROVIDERS:
            raise AccountsError(f"{path}: unknown provider [{provider}]{_suggestion(provider, PROVIDERS)}")
        if not isinstance(tables, dict):
            raise AccountsError(f"{path}: [{provider}] must hold tables [{provider}.ACCOUNT]")
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise AccountsError(f"{path}: [{provider}.{name}] must be a table")
            accounts[(provider, name)] = _account(path, provider, name, table, settings)
    return accounts


def sandbox_accounts(
    sandbox_url: str, settings: Settings | None = None
) -> dict[tuple[str, str], AccountConfig]:
    """The accounts of the built-in simulators (TICKETRELAY_SANDBOX=1 without an accounts file)."""
    base = sandbox_url.rstrip("/")
    key = SecretStr(SANDBOX_API_KEY)
    d = {**_defaults(settings), "sandbox": True}
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


def require_accounts_or_sandbox(settings: Settings | None = None) -> None:
    """Raise NoAccountsConfigured unless there is an accounts file or the sandbox was chosen
    (TICKETRELAY_SANDBOX=1). Called where intake, worker and beat start."""
    settings = settings or get_settings()
    if settings.accounts_file is None and not settings.sandbox:
        raise NoAccountsConfigured(NO_ACCOUNTS_MESSAGE)


def get_accounts(settings: Settings | None = None) -> dict[tuple[str, str], AccountConfig]:
    settings = settings or get_settings()
    if settings.accounts_file is None:
        require_accounts_or_sandbox(settings)
        return sandbox_accounts(settings.sandbox_url, settings)
    return load_accounts(settings.accounts_file, settings)


@lru_cache(maxsize=1)
def _process_accounts() -> dict[tuple[str, str], AccountConfig]:
    return get_accounts(get_settings())


def is_sandbox_account(provider: str, account: str) -> bool:
    """Whether results of this account come from a simulator, by the accounts this process
    runs with (read once, as intake and the worker read them). Without an accounts file every
    account is the sandbox's."""
    try:
        config = _process_accounts().get((provider, account))
    except AccountsError:
        return get_settings().accounts_file is None
    if config is None:
        return get_settings().accounts_file is None
    return config.sandbox
