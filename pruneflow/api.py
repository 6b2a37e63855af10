"""A short Python API over a run's results, for notebooks.

Run it in the project folder (where ``params.yaml`` and ``artifacts/`` are)::

    from pruneflow import api

    runs = api.Run()                              # params.yaml (+ overrides=[...])
    runs.results("spdy")                          # SPDY after gradual pruning, per profile/target
    runs.profile("spdy", target=2.0)              # {layer: sparsity} of SPDY's 2x profile
    model = runs.pruned_model("spdy", target=2.0) # the gradually pruned nn.Module (eval mode)
    runs.exported("spdy")                         # the folder `pruneflow export` wrote

Nothing here computes: every function reads the pipeline's artifacts (tables by their
documented schemas, checkpoints with names and shapes checked), and a missing one is one
clear error saying which step makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from torch import nn

from pruneflow import config, layout
from pruneflow.checkpoint import load_checkpoint
from pruneflow.chex import paths as chex_paths
from pruneflow.chex.store import load_extracted
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.io import read_parquet
from pruneflow.sdd.paths import sweep_file
from pruneflow.spdy.paths import ONESHOT_COLUMNS, oneshot_file, profiles_file, results_file
from pruneflow.steps.export import chex_export_dir, spdy_export_dir
from pruneflow.steps.spdy_gmp import profile_sparsities, run_checkpoint
from pruneflow.steps.spdy_inputs import dense_model as dense_checkpoint_model

METHODS = ("spdy", "sdd", "chex")


def _need(path: Path, step: str) -> Path:
    if not path.exists():
        raise PruneflowError(f"{path} does not exist: run the {step} step first")
    return path


@dataclass
class Run:
    """The results of the pipeline configured by ``params`` (a file, plus ``--set`` overrides)."""

    params_file: str | Path = "params.yaml"
    overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.params: Params = config.load(self.params_file, self.overrides)

    def scoped(self, method: str, model: str | None = None) -> Params:
        """One method's view of the params for ``model`` (default: its first model)."""
        if method not in METHODS:
            raise PruneflowError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
        chosen = model or getattr(self.params, method).models[0]
        return config.scoped(self.params, f"{method}:{chosen}")

    def results(self, method: str = "spdy", model: str | None = None) -> pd.DataFrame:
        """The method's headline table: SPDY's gradual-pruning results (``results.parquet``),
        the double-descent sweep, or CHEX's comparison at equal FLOPs."""
        p = self.scoped(method, model)
        if method == "spdy":
            return pd.read_parquet(_need(results_file(p), "spdy_results"))
        if method == "sdd":
            return pd.read_parquet(_need(sweep_file(p), "sdd_sweep"))
        return pd.read_parquet(_need(chex_paths.comparison_table(p), "chex_report"))

    def oneshot(self, model: str | None = None) -> pd.DataFrame:
        """SPDY's one-shot comparison of the profiles per target (``oneshot.parquet``)."""
        p = self.scoped("spdy", model)
        return read_parquet(_need(oneshot_file(p), "spdy_oneshot"), ONESHOT_COLUMNS)

    def profile(
        self, profile: str = "spdy", target: float = 2.0, model: str | None = None
    ) -> dict[str, float]:
        """``{layer: sparsity}`` of one SPDY one-shot profile (``spdy``, ``uniform``, ``gmp``)."""
        p = self.scoped("spdy", model)
        _need(profiles_file(p), "spdy_oneshot")
        return profile_sparsities(p, float(target), profile)

    def dense_model(self, method: str = "spdy", model: str | None = None) -> nn.Module:
        """The dense model the method pruned (SPDY: train_dense's checkpoint), eval mode."""
        if method != "spdy":
            raise PruneflowError("dense_model: only SPDY's dense checkpoint is shared")
        p = self.scoped("spdy", model)
        _need(layout.dense_checkpoint(p), "train_dense")
        return dense_checkpoint_model(p)

    def pruned_model(
        self,
        method: str = "spdy",
        model: str | None = None,
        target: float = 2.0,
        profile: str = "spdy",
        seed: int = 0,
    ) -> nn.Module:
        """SPDY: the gradual-pruning run of ``profile`` at ``target`` with ``seed`` (zeros in
        its pruned weights); CHEX: the extracted, physically smaller model. Eval mode."""
        p = self.scoped(method, model)
        if method == "spdy":
            item = {"target": float(target), "profile": profile, "seed": int(seed)}
            return load_checkpoint(_need(run_checkpoint(p, item), "spdy_gmp"))[0].eval()
        if method == "chex":
            extracted = _need(chex_paths.extracted_checkpoint(p), "chex_extract")
            return load_extracted(extracted)[0].eval()
        raise PruneflowError("pruned_model: spdy or chex (the double-descent sweep keeps levels)")

    def exported(self, method: str = "spdy", model: str | None = None) -> Path:
        """The folder of ``pruneflow export``'s files for the run ``export`` names."""
        p = self.scoped(method, model)
        if method not in ("spdy", "chex"):
            raise PruneflowError("exported: spdy or chex")
        folder = spdy_export_dir(p) if method == "spdy" else chex_export_dir(p)
        return _need(folder / "model.onnx", f"{method}_export").parent
