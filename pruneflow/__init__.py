"""pruneflow: reproducible pruning pipelines."""
