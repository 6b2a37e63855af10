"""CHEX: channel exploration during training from scratch (Hou et al., CVPR 2022).

Modules, one idea each:
  groups    channel groups from Torch-Pruning's dependency graph (residual sums kept together)
  masks     masked channels output zero, stay frozen, and come back with their MRU weights
  realloc   per-group channel counts from a global BN-|gamma| ranking under a budget
  css       column subset selection by leverage scores (which channels to keep)
  regrow    importance sampling of pruned channels by orthogonal-projection error
  schedule  the cosine regrowing factor; Delta_T and T_max in iterations
  explore   the training-loop hook tying them together (ChexExplorer), run through
            pruneflow.train.train's ``on_step`` (with its random shifts)
  extract   the physically smaller model
  flops     FLOPs (torch.utils.flop_counter), parameters, CPU latency
  baselines uniformly thinned and L1-pruned networks at equal FLOPs
  methods   one comparison run per method
  store     saving/loading masked and extracted models
  report    the comparison table's figures
  params    the ``chex`` params section
"""

from pruneflow.chex.css import css_select, leverage_scores
from pruneflow.chex.explore import ChexExplorer, ExploreSettings
from pruneflow.chex.extract import extract
from pruneflow.chex.flops import FlopsModel, count_flops, count_params, measure_latency
from pruneflow.chex.groups import ChannelGroup, find_groups
from pruneflow.chex.masks import MaskState
from pruneflow.chex.realloc import allocate, uniform_allocation
from pruneflow.chex.regrow import projection_errors, regrow_probabilities, sample_regrow
from pruneflow.chex.schedule import regrow_fraction

__all__ = [
    "ChannelGroup",
    "ChexExplorer",
    "ExploreSettings",
    "FlopsModel",
    "MaskState",
    "allocate",
    "count_flops",
    "count_params",
    "css_select",
    "extract",
    "find_groups",
    "leverage_scores",
    "measure_latency",
    "projection_errors",
    "regrow_fraction",
    "regrow_probabilities",
    "sample_regrow",
    "uniform_allocation",
]
