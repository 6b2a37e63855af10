"""Prefect flows: composition of tasks only (which tasks, in what order, with which params)."""
