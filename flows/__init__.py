"""Prefect flows: composition of tasks only (which tasks, in what order, with which params).

Each task's upstream edges are the earlier records whose files it reads (the steps declare
them, see ``tasks.common.feeding``): a flow passes what ran before, never a hand-kept list.
"""
