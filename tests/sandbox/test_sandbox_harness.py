"""The harness around the simulators: faults on every route, switches, clock, ground truth,
control routes, the README's switch table, and the package's independence from the product."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest
from sandbox_calls import CH, EG, FV, KEY, RP, channels, eg_booking, eguma, fourvenues, fv_headers, remypass

from worker.devtools.sandbox import SWITCHES, Sandbox

PACKAGE = Path(__file__).resolve().parents[2] / "worker" / "devtools" / "sandbox"
PROVIDERS = ("remypass", "fourvenues", "fourvenues_channels", "eguma")


def _create(client: httpx.Client, provider: str) -> httpx.Response:
    if provider == "remypass":
        return remypass(client)
    if provider == "fourvenues":
        return fourvenues(client)
    if provider == "fourvenues_channels":
        return channels(client)
    return eguma(client)


# ---- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_before_creates_nothing(client: httpx.Client, sandbox: Sandbox, provider: str) -> None:
    sandbox.set_faults(provider, fail_next=[{"status": 500}, {"status": 429, "retry_after": 2}])
    assert _create(client, provider).status_code == 500
    limited = _create(client, provider)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    truth = sandbox.ground_truth()[provider]
    assert truth["tickets"] == 0
    assert truth["faults"] == {"status_500": 1, "status_429": 1}
    assert _create(client, provider).status_code == 201


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "drop_after_create"},
        {"kind": "malformed_after_create"},
        {"status": 502, "after_create": True},
    ],
)
def test_fault_after_create_commits(
    client: httpx.Client, sandbox: Sandbox, provider: str, fault: dict[str, object]
) -> None:
    sandbox.set_faults(provider, fail_next=[fault])
    try:
        resp = _create(client, provider)
    except httpx.RemoteProtocolError:
        assert fault.get("kind") == "drop_after_create"
    else:
        if fault.get("kind") == "malformed_after_create":
            assert resp.status_code == 200
            with pytest.raises(ValueError):
                resp.json()
        else:
            assert resp.status_code == 502
    assert sandbox.ground_truth()[provider]["tickets"] >= 1


def test_timeout_in_process_raises(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", fail_next=[{"kind": "timeout"}])
    with pytest.raises(httpx.ReadTimeout):
        remypass(client)
    assert sandbox.ground_truth()["remypass"]["faults"] == {"timeout": 1}


@pytest.mark.parametrize(
    ("provider", "path", "headers"),
    [
        ("fourvenues", FV + "/by-code/ANY", fv_headers()),
        ("fourvenues", FV + "/some-id", fv_headers()),
        ("remypass", RP + "/passes/some-id", {"X-API-Key": "sandbox-key"}),
        ("fourvenues_channels", CH + "/tickets", {"X-Api-Key": "sandbox-key"}),
        ("eguma", EG + "/orders.json?apikey=sandbox-key", {}),
    ],
)
def test_faults_act_on_lookups_too(
    client: httpx.Client, sandbox: Sandbox, provider: str, path: str, headers: dict[str, str]
) -> None:
    sandbox.set_faults(
        provider, fail_next=[{"status": 503}, {"kind": "timeout"}, {"kind": "malformed_after_create"}]
    )
    assert client.get(path, headers=headers).status_code == 503
    with pytest.raises(httpx.ReadTimeout):
        client.get(path, headers=headers)
    garbled = client.get(path, headers=headers)
    assert garbled.headers["content-type"].startswith("text/html")
    assert client.get(path, headers=headers).status_code in (200, 404)


def test_random_faults_are_seeded(sandbox: Sandbox) -> None:
    def run() -> list[int]:
        sandbox.reset()
        sandbox.set_faults("remypass", error_500_rate=0.5, seed=5)
        with httpx.Client(transport=httpx.MockTransport(sandbox.handle), base_url="http://s") as c:
            return [
                c.get(RP + "/passes", headers={"X-API-Key": "sandbox-key"}).status_code for _ in range(20)
            ]

    first = run()
    assert first == run()
    assert set(first) == {200, 500}


def test_latency(client: httpx.Client, sandbox: Sandbox) -> None:
    import time

    sandbox.set_faults("fourvenues_channels", latency_ms=150)
    started = time.monotonic()
    channels(client)
    assert time.monotonic() - started >= 0.14


@pytest.mark.parametrize(
    "faults",
    [
        {"nope": 1},
        {"error_500_rate": 2},
        {"latency_ms": -1},
        {"fail_next": [{"status": 200}]},
        {"fail_next": [{"kind": "explode"}]},
        {"fail_next": ["500"]},
        {"accept_duplicate_qr": "yes"},
    ],
)
def test_bad_fault_settings(sandbox: Sandbox, faults: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        sandbox.set_faults("fourvenues", **faults)


def test_set_faults_replaces_and_star_leaves_switches(sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", failures="release")
    sandbox.set_faults("*", latency_ms=5)
    sandbox.set_faults("eguma", rate_429=0.1)
    faults = sandbox.faults()
    assert faults["eguma"]["latency_ms"] == 0 and faults["eguma"]["rate_429"] == 0.1
    assert faults["remypass"]["latency_ms"] == 5
    sandbox.set_faults("*")
    assert sandbox.switches()["eguma"]["failures"] == "release"
    with pytest.raises(ValueError):
        sandbox.set_faults("nope")


def test_accept_duplicate_qr_alias(sandbox: Sandbox) -> None:
    sandbox.set_faults("*", accept_duplicate_qr=False)
    assert sandbox.switches()["fourvenues"]["duplicate_qr"] == "refuse"
    assert sandbox.switches()["fourvenues_channels"]["duplicate_qr"] == "refuse"
    sandbox.set_faults("fourvenues", accept_duplicate_qr=True)
    assert sandbox.switches()["fourvenues"]["duplicate_qr"] == "accept"
    assert sandbox.switches()["fourvenues_channels"]["duplicate_qr"] == "refuse"


# ---- switches ------------------------------------------------------------------------------


def test_switch_defaults_and_reset(sandbox: Sandbox) -> None:
    defaults = {p: {s.name: s.default for s in t.values()} for p, t in SWITCHES.items()}
    assert sandbox.switches() == defaults
    sandbox.set_switches("remypass", duplicate_status=409)
    sandbox.set_switches("*", duplicate_qr="refuse")  # every provider that has it
    assert sandbox.switches()["remypass"]["duplicate_status"] == 409
    assert sandbox.switches()["fourvenues"]["duplicate_qr"] == "refuse"
    assert sandbox.switches()["fourvenues_channels"]["duplicate_qr"] == "refuse"
    sandbox.reset_switches("remypass")
    assert sandbox.switches()["remypass"] == defaults["remypass"]
    assert sandbox.switches()["fourvenues"]["duplicate_qr"] == "refuse"
    sandbox.reset()
    assert sandbox.switches() == defaults


@pytest.mark.parametrize(
    ("provider", "switches", "words"),
    [
        ("remypass", {"duplicate_status": 418}, "takes one of"),
        ("remypass", {"duplicate_status": "400"}, "takes one of"),
        ("remypass", {"duplicate_qr": "accept"}, "unknown switch"),
        ("eguma", {"failures": True}, "takes one of"),
        ("nope", {"x": 1}, "unknown provider"),
        ("*", {"nothing_like_this": 1}, "unknown switch"),
    ],
)
def test_bad_switches_change_nothing(
    sandbox: Sandbox, provider: str, switches: dict[str, object], words: str
) -> None:
    """A valid switch in the same call is not applied either."""
    before = sandbox.switches()
    extra = {"mismatch_status": 400} if provider == "eguma" else {}
    with pytest.raises(ValueError, match=words):
        sandbox.set_switches(provider, **extra, **switches)
    assert sandbox.switches() == before


def test_every_switch_is_in_the_readme_table() -> None:
    text = (PACKAGE / "README.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in SWITCHES and cells[1].startswith("`"):
            rows[(cells[0], cells[1].strip("`"))] = (cells[2], cells[3])
    expected = {
        (p, s.name): (", ".join(f"`{v}`" for v in s.values), f"`{s.default}`")
        for p, table in SWITCHES.items()
        for s in table.values()
    }
    assert rows == expected


# ---- clock ---------------------------------------------------------------------------------


def test_clock(sandbox: Sandbox) -> None:
    import time

    before = sandbox.now()
    sandbox.advance_clock(3600)
    assert sandbox.now() - time.time() == pytest.approx(3600, abs=2)
    assert sandbox.now() > before
    for bad in (-1, "10", True):
        with pytest.raises(ValueError):
            sandbox.advance_clock(bad)  # type: ignore[arg-type]
    sandbox.reset()
    assert sandbox.now() == pytest.approx(time.time(), abs=2)


# ---- ground truth and routes ---------------------------------------------------------------


def test_ground_truth_keeps_its_keys(client: httpx.Client, sandbox: Sandbox) -> None:
    for provider in PROVIDERS:
        _create(client, provider)
    truth = sandbox.ground_truth()
    assert set(truth) == set(PROVIDERS)
    for provider in PROVIDERS:
        assert set(truth[provider]) >= {
            "requests",
            "tickets",
            "faults",
            "creations",
            "creations_by_request",
            "recent_arrivals",
            "issued",
            "cancel_calls",
            "routes",
        }
        assert truth[provider]["requests"] == 1 and len(truth[provider]["recent_arrivals"]) == 1
    assert truth["remypass"]["creations"] == {"BOOKING-1": 1}
    assert truth["eguma"]["creations"] == {"key-1": 1}
    assert truth["eguma"]["tickets"] == 1  # one ticket in the sample


def test_routes_counted(client: httpx.Client, sandbox: Sandbox) -> None:
    fourvenues(client)
    client.get(FV + "/by-code/X", headers=fv_headers())
    client.get(FV + "/by-code/Y", headers=fv_headers())
    client.get("/fourvenues/tickets/by-code/X", headers=fv_headers())
    assert sandbox.ground_truth()["fourvenues"]["routes"] == {
        "POST /integrations/tickets/": 1,
        "GET /integrations/tickets/by-code/{code}": 2,
        "unknown": 1,
    }


def test_unknown_provider_prefix_is_html_404(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = client.get("/nope/tickets")
    assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")
    assert "Cannot GET /nope/tickets" in resp.text


def test_reset_forgets(client: httpx.Client, sandbox: Sandbox) -> None:
    eguma(client, eg_booking())
    sandbox.set_faults("eguma", latency_ms=5)
    sandbox.advance_clock(10)
    sandbox.reset()
    assert sandbox.ground_truth()["eguma"]["creations"] == {}
    assert sandbox.faults()["eguma"]["latency_ms"] == 0
    assert eguma(client, eg_booking()).headers.get("Idempotent-Replayed") is None


# ---- control routes ------------------------------------------------------------------------


def test_control_routes(client: httpx.Client, sandbox: Sandbox) -> None:
    ok = client.post("/_sandbox/switches", json={"provider": "eguma", "failures": "release"})
    assert ok.status_code == 200 and ok.json()["switches"]["eguma"]["failures"] == "release"
    assert client.get("/_sandbox/switches").json()["eguma"]["failures"] == "release"
    bad = client.post("/_sandbox/switches", json={"provider": "eguma", "failures": "sometimes"})
    assert bad.status_code == 400 and "failures" in bad.json()["error"]
    assert client.post("/_sandbox/switches", json={"failures": "release"}).status_code == 400
    reset = client.post("/_sandbox/switches", json={"provider": "eguma", "reset": True})
    assert reset.json()["switches"]["eguma"]["failures"] == "replay"
    clock = client.post("/_sandbox/clock", json={"advance_s": 7200})
    assert clock.status_code == 200 and clock.json()["offset_s"] == 7200
    assert client.get("/_sandbox/clock").json()["offset_s"] == 7200
    assert client.post("/_sandbox/clock", json={"advance_s": -5}).status_code == 400
    assert client.post("/_sandbox/clock", json={"seconds": 5}).status_code == 400
    faults = client.post("/_sandbox/faults", json={"provider": "remypass", "latency_ms": 1})
    assert faults.json()["faults"] == {"remypass": sandbox.faults()["remypass"]}
    assert client.post("/_sandbox/faults", json={"provider": "remypass", "zzz": 1}).status_code == 400
    assert client.post("/_sandbox/faults", content=b"{not json").status_code == 400
    booked = eguma(client, eg_booking()).json()
    number = booked["tickets"][0]["ticket_number"]
    assert (
        client.post("/_sandbox/check-in", json={"provider": "eguma", "ticket_number": number}).status_code
        == 200
    )
    assert (
        client.post("/_sandbox/check-in", json={"provider": "remypass", "ticket_number": "x"}).status_code
        == 400
    )
    assert client.get("/_sandbox/nothing").status_code == 404
    assert client.post("/_sandbox/reset").json() == {"ok": True}
    assert client.get("/_sandbox/ground-truth").json()["eguma"]["creations"] == {}


# ---- independence --------------------------------------------------------------------------

_PRODUCT = ("schemas", "worker.providers", "worker.validation", "worker.settings", "tasks")
_ALLOWED = "worker.devtools.sandbox"


def test_the_package_imports_nothing_of_the_product() -> None:
    imported: list[tuple[str, str]] = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith(_PRODUCT) or (name.startswith("worker") and not name.startswith(_ALLOWED)):
                    imported.append((path.name, name))
    assert imported == []


def test_no_product_module_is_loaded_by_the_sandbox() -> None:
    """Beyond what `import worker` itself loads (its package guard imports `schemas`)."""
    import subprocess
    import sys

    code = (
        "import re, sys, worker; base = set(sys.modules); "
        "import worker.devtools.sandbox as s; s.Sandbox(); "
        "new = set(sys.modules) - base; "
        "bad = [m for m in new if re.match(r'(schemas|tasks|worker\\.(?!devtools))', m)]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_names_the_base_urls() -> None:
    text = (PACKAGE / "README.md").read_text()
    for base in (
        "{sandbox}/remypass/api/v1/public",
        "{sandbox}/fourvenues",
        "{sandbox}/fourvenues-channels",
        "{sandbox}/eguma/v1",
    ):
        assert re.search(re.escape(base), text)


def test_rate_limit_per_key(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("fourvenues", rate_limit_per_s=3)
    statuses = [client.get(FV + "/by-code/X", headers=fv_headers()).status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]
    limited = client.get(FV + "/by-code/X", headers=fv_headers())
    assert limited.headers["Retry-After"] == "1" and limited.json()["success"] is False
    assert client.get(FV + "/by-code/X", headers=fv_headers("sandbox-key-2")).status_code == 404
    assert sandbox.ground_truth()["fourvenues"]["faults"] == {"rate_limited": 3}
    import time

    time.sleep(1.05)
    assert client.get(FV + "/by-code/X", headers=fv_headers()).status_code == 404


def test_a_sandbox_can_start_from_other_positions() -> None:
    sandbox = Sandbox(switches={"fourvenues": {"sent_qr_code": "becomes_code"}, "*": {"create_status": 200}})
    assert sandbox.switches()["fourvenues"]["sent_qr_code"] == "becomes_code"
    assert sandbox.switches()["eguma"]["create_status"] == 200
    sandbox.set_switches("fourvenues", sent_qr_code="ignored")
    sandbox.reset()
    assert sandbox.switches()["fourvenues"]["sent_qr_code"] == "becomes_code"
    with pytest.raises(ValueError):
        Sandbox(switches={"eguma": {"failures": "never"}})


def test_switch_flags_of_the_server_command() -> None:
    from worker.devtools.sandbox.server import main
    from worker.devtools.sandbox.switches import parse_switch

    assert parse_switch("eguma.mismatch_status=409") == ("eguma", "mismatch_status", 409)
    assert parse_switch("fourvenues.lookup_paths=both") == ("fourvenues", "lookup_paths", "both")
    for bad in ("eguma.failures", "failures=release"):
        with pytest.raises(ValueError):
            parse_switch(bad)
    with pytest.raises(SystemExit) as exc:
        main(["--port", "0", "--switch", "eguma.failures=sometimes"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("method", "path", "headers", "error_key", "not_json"),
    [
        (
            "POST",
            RP + "/event-tickets/create-from-booking",
            {"X-API-Key": KEY},
            "message",
            "Invalid JSON body",
        ),
        ("POST", FV + "/", {"x-api-key": KEY}, "error", "Invalid JSON body"),
        ("POST", CH + "/tickets", {"X-Api-Key": KEY}, "message", "Invalid JSON body"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_the_simulators_own_400(
    client: httpx.Client, method: str, path: str, headers: dict[str, str], error_key: str, not_json: str
) -> None:
    broken = client.request(method, path, content=b"{not json", headers=headers)
    assert broken.status_code == 400 and broken.json()[error_key] == not_json
    listed = client.request(method, path, json=[1], headers=headers)
    assert listed.status_code == 400
    assert listed.json()[error_key] == "the request body must be a JSON object"


def test_eguma_names_a_body_that_is_not_json_with_its_code(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", error_format="json")
    broken = eguma(client, content=b"{not json")
    assert broken.status_code == 400
    assert broken.json() == {"error": "validation_error", "message": "The request body is not valid JSON"}
