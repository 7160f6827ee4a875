"""The throughput/latency benchmark (GitHub issue "Performance"): `./scripts/bench [--quick]`."""
