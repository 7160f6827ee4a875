"""`python -m worker.ops.metrics_server`: the exporter's entry point, kept for deployments and
tests that start it by this name. The code is in worker/ops/metrics/."""

from worker.ops.metrics.server import MetricsServer, main

__all__ = ["MetricsServer", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
