"""Sparse double descent (He et al., ICML'22): iterative pruning sweeps on noisy labels.

Small modules, one idea each:
  ``params``      the ``sdd`` params section (until it moves into pruneflow.config)
  ``schedule``    level sparsities ``1 - (1 - f)^L`` and how many levels reach the target
  ``retrain``     one round: scores, masks, the retraining start point per mode, retraining
  ``distance``    the L2 learning distance between a level's start point and its result
  ``evaluation``  per-level accuracies on noisy / true training labels and the clean test set
  ``phases``      light / critical / sweet / collapsed from a test-accuracy curve, changes
                  counted against its standard errors
  ``sweep``       records -> sweep table, phase tables, rewind-vs-reinit comparison
  ``evidence``    a curve's dense / dip / sweet / collapse points with 95% intervals and the
                  paired dip, rise and collapse: the four-phases claim's verdict
  ``state``       the checkpoint format of the sweep's chains (weights + masks, safetensors)
  ``plots``       the figures
The pipeline steps are in :mod:`pruneflow.steps.sdd`.
"""

from pruneflow.sdd.distance import learning_distance
from pruneflow.sdd.phases import PHASES, PhaseResult, label_phases, level_standard_errors
from pruneflow.sdd.schedule import level_sparsity, num_levels, schedule
from pruneflow.sdd.sweep import add_phases, lottery_table, sweep_table

__all__ = [
    "PHASES",
    "PhaseResult",
    "add_phases",
    "label_phases",
    "level_standard_errors",
    "learning_distance",
    "level_sparsity",
    "lottery_table",
    "num_levels",
    "schedule",
    "sweep_table",
]
