"""Prefect tasks: each pipeline step of ``pruneflow.steps`` wrapped with its cache policy."""
