"""Built-in backends, importable as `edgeagent.backends.<name>`.

Each registers in the `edgeagent.backends` entry-point group (see pyproject.toml), the same way
a third-party backend would. Importing this package imports no SDK.
"""
