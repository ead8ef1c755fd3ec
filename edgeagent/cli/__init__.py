"""The `edgeagent` command line: one module per command group, each thin over the public API."""
