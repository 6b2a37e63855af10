"""Sparsity levels and masks shared by the pruning methods."""

from pruneflow.sparsity.grid import SKIP_POLICY, skipped_layers, sparsity_grid

__all__ = ["SKIP_POLICY", "skipped_layers", "sparsity_grid"]
