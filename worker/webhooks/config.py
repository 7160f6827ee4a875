"""Where a result may be POSTed: the account's callback URL, the allow-list of hosts, the
secrets that sign. Every check here names a setting, never a secret's value."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from worker.settings import AccountConfig, Settings
from worker.webhooks.signing import SecretFormatError, decode_secret


def _hosts(value: str) -> frozenset[str]:
    return frozenset(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())


@dataclass(frozen=True)
class HostPolicy:
    """TICKETRELAY_CALLBACK_ALLOWED_HOSTS and TICKETRELAY_CALLBACK_HTTP_HOSTS. Checked when a
    request is about to leave, not only when the URL was configured: an entry written under an
    older configuration goes nowhere the present one forbids."""

    allowed: frozenset[str]
    http: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        return cls(_hosts(settings.callback_allowed_hosts), _hosts(settings.callback_http_hosts))

    @staticmethod
    def _matches(host: str, patterns: frozenset[str]) -> bool:
        if host in patterns:
            return True
        # "*.example.com" takes every subdomain, not example.com itself.
        return any(p.startswith("*.") and host.endswith(p[1:]) for p in patterns)

    def refusal(self, url: str) -> str | None:
        """Why a request to `url` must not be made, or None. Shows the host, never the rest of
        the URL (a path or query can hold a receiver's token)."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return "callback URL is not a valid URL"
        if parts.scheme not in ("https", "http") or not host:
            return "callback URL must be an https:// URL with a host"
        if parts.username is not None or parts.password is not None:
            return "callback URL must not carry user:password (the signature authenticates us)"
        if not self._matches(host, self.allowed):
            return f"host {host} is not in TICKETRELAY_CALLBACK_ALLOWED_HOSTS"
        if parts.scheme == "http" and not self._matches(host, self.http):
            return f"host {host} needs https (or TICKETRELAY_CALLBACK_HTTP_HOSTS to allow http)"
        return None


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "?").lower()
    except ValueError:
        return "?"


def origin_of(url: str) -> str:
    """host:port, the unit a receiver is served by (two ports of one host are two receivers)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{(parts.hostname or '?').lower()}:{port}"
    except ValueError:
        return "?"


def safe_url(url: str) -> str:
    """scheme://host[:port]/path, without query, fragment or user info: for logs and listings."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or "?"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{netloc}{parts.path}"


def signing_keys(account: AccountConfig) -> list[bytes]:
    """The keys that sign this account's callbacks (new first); SecretFormatError when one is
    not a `whsec_` secret of 24 to 64 bytes, ValueError when there is none."""
    if not account.callback_secret:
        raise ValueError(f"account {account.provider}.{account.name}: callback_secret is not set")
    return [decode_secret(s.get_secret_value()) for s in account.callback_secret]


def account_problem(account: AccountConfig, policy: HostPolicy | None = None) -> str | None:
    """Why this account's callbacks cannot go out, or None (no callback_url: nothing to do)."""
    if account.callback_url is None:
        return None
    where = f"account {account.provider}.{account.name}"
    try:
        signing_keys(account)
    except SecretFormatError as exc:
        return f"{where}: callback_secret: {exc}"
    except ValueError as exc:
        return str(exc)
    if policy is not None:
        why = policy.refusal(account.callback_url)
        if why is not None:
            return f"{where}: {why}"
    return None


def configuration_problems(accounts: dict[tuple[str, str], AccountConfig], settings: Settings) -> list[str]:
    """Every account whose callbacks would not go out, for a start-up check or `status`."""
    policy = HostPolicy.from_settings(settings)
    found = (account_problem(a, policy) for a in accounts.values())
    return [p for p in found if p is not None]


def callback_url(accounts: dict[tuple[str, str], AccountConfig], provider: str, account: str) -> str | None:
    """The URL a result of this provider and account is POSTed to, or None for none."""
    config = accounts.get((provider, account))
    return config.callback_url if config is not None else None


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float
    cap_s: float
    max_attempts: int
    max_age_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base_s=settings.callback_backoff_base_s,
            cap_s=settings.callback_backoff_cap_s,
            max_attempts=settings.callback_max_attempts,
            max_age_s=settings.callback_max_age_h * 3600,
        )
