"""What travels between the two fronts (MockTransport, HTTP server) and the simulators."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Action = Literal["timeout", "drop"]


@dataclass
class SandboxRequest:
    method: str
    path: str  # below the provider's prefix, starting with "/"
    query: dict[str, str]
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The JSON body; ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))


@dataclass
class SandboxReply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # "timeout": answer nothing for longer than the client waits; "drop": close the connection
    # without an answer. In-process both raise the matching httpx exception instead.
    action: Action | None = None
    sleep_s: float = 0.0
    # Runs under the sandbox lock once the (possibly slow) answer is ready, with the answer the
    # provider's application gave (an injected after-create 5xx replaces the simulator's own):
    # e-guma stores it against the Idempotency-Key there.
    on_sent: Callable[[SandboxReply], None] | None = None

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> SandboxReply:
        return cls(
            status,
            json.dumps(obj).encode(),
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )

    @classmethod
    def text(cls, status: int, text: str) -> SandboxReply:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    @classmethod
    def html(cls, status: int, page: str) -> SandboxReply:
        return cls(status, page.encode(), {"Content-Type": "text/html; charset=utf-8"})


def cannot(method: str, path: str) -> SandboxReply:
    """A web framework's answer to a route it does not have: 404 with an HTML page, never JSON,
    so a client asking at the wrong path cannot read it as "no such ticket"."""
    text = html.escape(f"Cannot {method} {path}")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
        f"</head>\n<body>\n<pre>{text}</pre>\n</body>\n</html>\n"
    )
    return SandboxReply.html(404, page)


Handler = Callable[..., SandboxReply]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # "/integrations/tickets/{id}"; {name} matches one path segment
    handler: Handler
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template.rstrip("/")))
        # Express-style: a trailing slash is optional.
        object.__setattr__(self, "pattern", re.compile(f"^{regex}/?$"))

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def match(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The first route for (method, path), with its path parameters."""
    for route in routes:
        if route.method != method:
            continue
        found = route.pattern.match(path)
        if found:
            return route, found.groupdict()
    return None
