"""The Kubernetes integration: the only package that imports the kubernetes client (pyproject.toml
contracts)."""
