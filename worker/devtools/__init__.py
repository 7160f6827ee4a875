"""Developer tools: the one-machine system (`dev`, `demo`), the embedded Redis, the process
supervisor and the provider simulators (`sandbox/`). Never needed in production; the pipeline
never imports this package."""
