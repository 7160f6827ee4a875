"""Provider simulators: stateful fakes of the four APIs with fault injection and ground truth.

In-process:  sandbox = Sandbox(); httpx.Client(transport=httpx.MockTransport(sandbox.handle))
Over HTTP:   server = start_in_thread(sandbox); ... server.url ...; server.stop()
             or `python -m worker.devtools.sandbox --host 127.0.0.1 --port 8765`
"""

from worker.devtools.sandbox.core import FaultConfig, Sandbox
from worker.devtools.sandbox.server import SandboxHTTPServer, main, make_server, serve, start_in_thread

__all__ = [
    "FaultConfig",
    "Sandbox",
    "SandboxHTTPServer",
    "main",
    "make_server",
    "serve",
    "start_in_thread",
]
