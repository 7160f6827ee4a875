"""Provider simulators: stateful fakes of the four APIs, written from the providers' documentation
alone, with switches for what the docs leave open, fault injection, a movable clock and ground
truth. README.md beside this file lists the routes and switches.

In-process:  sandbox = Sandbox(); httpx.Client(transport=httpx.MockTransport(sandbox.handle))
Over HTTP:   server = start_in_thread(sandbox); ... server.url ...; server.stop()
             or `python -m worker.devtools.sandbox --host 127.0.0.1 --port 8765`
"""

from worker.devtools.sandbox.core import FaultConfig, Sandbox
from worker.devtools.sandbox.server import SandboxHTTPServer, main, make_server, serve, start_in_thread
from worker.devtools.sandbox.switches import SWITCHES

__all__ = [
    "SWITCHES",
    "FaultConfig",
    "Sandbox",
    "SandboxHTTPServer",
    "main",
    "make_server",
    "serve",
    "start_in_thread",
]
