"""NetworkPolicy for Linux nodes (docs/network-policy.md). So far: ``model``, the semantics as a pure
reference model; enforcement comes next."""
