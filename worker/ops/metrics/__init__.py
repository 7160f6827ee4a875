"""The Prometheus exporter: collector.py reads the stores and builds the metrics, server.py
serves them over HTTP (`ticketrelay metrics`)."""

from worker.ops.metrics.collector import TicketrelayCollector
from worker.ops.metrics.server import MetricsServer, main

__all__ = ["MetricsServer", "TicketrelayCollector", "main"]
