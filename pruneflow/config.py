"""params.yaml: the pydantic models of every section, and the one way to load them.

Every knob a user may turn lives here, under the same dotted name the CLI's ``--set``, the flows
and ``dvc.yaml`` use (``noise.rate``, ``train.epochs``, ...). Validation happens before any work
starts: an unknown key, a wrong type or an out-of-range value stops with a single line naming
the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pruneflow.errors import PruneflowError
from pruneflow.models.sources import is_import_path, parse_model_name
from pruneflow.models.zoo import MODEL_NAMES as MODEL_NAMES  # re-exported

DATASETS = ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")


def _model_name(value: str) -> str:
    try:
        parse_model_name(value)
    except PruneflowError as exc:
        raise ValueError(str(exc)) from None
    return value


def _dataset_name(value: str) -> str:
    if value not in DATASETS and not is_import_path(value):
        raise ValueError(
            f"unknown data set '{value}'; choose one of {', '.join(DATASETS)}, or an import "
            "path package.module:factory returning (train_set, test_set, num_classes)"
        )
    return value


# a zoo name, torchvision:NAME or package.module:factory (pruneflow.models.sources)
ModelName = Annotated[str, AfterValidator(_model_name)]
# a built-in data set or package.module:factory (pruneflow.data.datasets)
DatasetName = Annotated[str, AfterValidator(_dataset_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeParams(_Section):
    threads: int = Field(
        2,
        ge=1,
        le=512,
        description="torch intra-op threads of a step running alone; the fan-out items a flow "
        "runs side by side on this host share them (at least one each)",
    )
    flush_denormal: bool = Field(
        True, description="flush denormal floats to zero (6x faster training on this CPU)"
    )
    progress: Literal["auto", "on", "off"] = Field(
        "auto", description="progress bars: auto shows them only on a terminal"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where training, evaluation and SPDY's scoring run: auto = CUDA when the "
        "host has it (a worker on a GPU host), else the CPU",
    )

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted on/off as a boolean (`--set runtime.progress=off`)
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class DataParams(_Section):
    dataset: DatasetName = "digits"
    root: str = Field("data", description="folder holding on-disk data sets (never downloaded)")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(
        0.2, gt=0.0, lt=0.5, description="test share for data sets without an official test split"
    )
    split_seed: int = Field(0, ge=0)
    image_size: int = Field(64, ge=8, le=1024, description="imagefolder images are resized to it")


class NoiseParams(_Section):
    rate: float = Field(0.2, ge=0.0, lt=1.0, description="fraction of training labels flipped")
    kind: Literal["symmetric", "asymmetric"] = "symmetric"
    seed: int = Field(0, ge=0)


class ModelParams(_Section):
    name: ModelName = Field(
        "lenet300100",
        description="a zoo model, torchvision:NAME (random init) or the user's "
        "package.module:factory (called with num_classes=, in_shape=)",
    )
    weights: str | None = Field(
        None,
        description="a trained checkpoint of this model (safetensors, or a torch state dict "
        "read with weights_only=True): dense training is skipped and the model evaluated",
    )


class TrainParams(_Section):
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, lt=1.0)
    schedule: Literal["constant", "step", "cosine"] = "cosine"
    step_size: int = Field(10, ge=1, description="epochs between LR drops (schedule: step)")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="LR factor per drop (schedule: step)")
    seed: int = Field(0, ge=0)


class GridParams(_Section):
    """SPDY's sparsity grid: dense plus levels geometric in density (the authors' 0.4..0.99/40)."""

    min_sparsity: float = Field(0.4, gt=0.0, lt=1.0)
    model_min_sparsity: dict[ModelName, float] = Field(
        default_factory=lambda: {"mlp1024": 0.1},
        description="min_sparsity per model, for a model whose sparse kernels already beat "
        "dense below min_sparsity (mlp1024 at 40% runs 2.1x faster: past the 1.5x and 2x "
        "targets, which every profile then over-achieves alike)",
    )
    max_sparsity: float = Field(0.99, gt=0.0, lt=1.0)
    steps: int = Field(40, ge=1, le=1000)
    skip_first_last: bool = Field(
        True, description="leave the first and last prunable layers dense (per-model rule)"
    )
    include: list[str] = Field(
        [],
        description="glob patterns of the layers to prune (empty: every Conv2d/Linear but "
        "the first and last, as skip_first_last says); a set include replaces that rule",
    )
    exclude: list[str] = Field([], description="glob patterns of layers left dense")

    @field_validator("max_sparsity")
    @classmethod
    def _above_min(cls, value: float, info: Any) -> float:
        low = info.data.get("min_sparsity")
        if low is not None and value <= low:
            raise ValueError(f"must be greater than min_sparsity ({low})")
        return value

    @model_validator(mode="after")
    def _model_floors(self) -> GridParams:
        for model, low in self.model_min_sparsity.items():
            if not 0.0 < low < self.max_sparsity:
                raise ValueError(
                    f"model_min_sparsity of {model} must be in (0, max_sparsity = "
                    f"{self.max_sparsity:g}), got {low:g}"
                )
        return self

    def min_sparsity_for(self, model: str) -> float:
        """The grid's lowest sparse level for ``model``."""
        return self.model_min_sparsity.get(model, self.min_sparsity)


class TimingParams(_Section):
    """How layer times are measured (on the host the model will run on)."""

    threads: int = Field(1, ge=1, le=512)
    batch_size: int | None = Field(
        None, ge=1, description="None: the per-model default (every layer >= ~0.5 ms dense)"
    )
    warmup: int = Field(2, ge=0)
    min_repeats: int = Field(3, ge=1)
    max_repeats: int = Field(15, ge=1)
    rel_tol: float = Field(0.03, gt=0.0, lt=1.0, description="stop once the median is this stable")
    max_seconds: float = Field(
        0.25, gt=0.0, description="time cap per sweep (round, level, backend)"
    )
    rounds: int = Field(
        2, ge=1, description="sweeps per (layer, level), at different times; the table's median"
    )
    quantile: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="each entry: this quantile of its runs pooled over the rounds; the measured "
        "speedups use the table's (0.5: medians; the host's medians drift with its load)",
    )
    min_seconds: float = Field(
        60.0,
        ge=0.0,
        description="rounds are added (up to max_rounds) until the sweeps took this long: a fast "
        "model's entries then span minutes of the host's drift, not seconds",
    )
    max_rounds: int = Field(10, ge=1, description="the cap on rounds added for min_seconds")
    smooth_window: int = Field(
        5,
        ge=1,
        description="levels per local linear fit of a layer's times over density, then made "
        "non-increasing in sparsity (1: the medians as measured)",
    )
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _round_cap(self) -> TimingParams:
        if self.max_rounds < self.rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be >= rounds ({self.rounds})")
        return self


class ReconParams(_Section):
    """The layer-wise reconstruction database (exact OBS; SparseGPT for layers too wide)."""

    calib_samples: int = Field(
        1024, ge=1, description="calibration images from the train split (all if fewer)"
    )
    calib_seed: int = Field(0, ge=0, description="which train images are the calibration set")
    batch_size: int = Field(128, ge=1, description="images per forward pass while capturing")
    damp: float = Field(0.01, gt=0.0, lt=1.0, description="diagonal dampening, x mean diagonal")
    solver: Literal["auto", "exact", "sparsegpt"] = Field(
        "auto", description="auto: exact OBS while rows * d^3 <= exact_max_work, else SparseGPT"
    )
    exact_max_work: float = Field(
        2.0**41, gt=0.0, description="the size rule of solver=auto, in rows * d^3 flops"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")


class SearchParams(_Section):
    """SPDY's sensitivity search (Algorithm 4) and how candidates are scored."""

    candidates: int = Field(20, ge=1, description="k: random candidates (and per d if fixed_k)")
    delta: float = Field(0.1, ge=0.0, le=1.0, description="local search starts at d = delta * L")
    max_no_improvement: int = Field(
        20, ge=1, description="local search: candidates in a row without improvement per d"
    )
    local_rule: Literal["no_improvement", "fixed_k"] = "no_improvement"
    buckets: int = Field(10_000, ge=1, description="DP time discretization of the budget")
    bn: Literal["eval", "train"] = Field(
        "eval", description="BatchNorm while scoring: running stats, or calibration-batch stats"
    )
    calib_samples: int | None = Field(
        512,
        ge=1,
        description="images each candidate is scored on: this many of spdy.recon's calibration "
        "set, drawn in its seeded order (null: all of them)",
    )
    seed: int = Field(0, ge=0)


class GmpParams(_Section):
    """Gradual magnitude pruning to each profile, from the dense checkpoint (spdy.train's recipe
    with these epochs and learning rate)."""

    profiles: list[Literal["spdy", "uniform", "gmp"]] = Field(
        ["spdy", "uniform", "gmp"], min_length=1, description="which one-shot profiles to train"
    )
    seeds: list[int] = Field(
        [0, 1, 2, 3, 4, 5, 6, 7], min_length=1, description="one gradual-pruning run per seed"
    )
    start_epoch: float = Field(
        0.0, ge=0.0, description="pruning starts here (epochs of this run; fractions allowed)"
    )
    end_epoch: float = Field(
        6.0, gt=0.0, le=10_000, description="every layer reaches its sparsity here"
    )
    finetune_epochs: float = Field(
        2.0, ge=0.0, le=10_000, description="epochs with fixed masks after end_epoch"
    )
    every_steps: int = Field(4, ge=1, description="dt: optimizer steps between mask updates")
    batch_size: int | None = Field(None, ge=1, description="images per step (null: spdy.train's)")
    lr: float = Field(0.01, gt=0.0, le=10.0)
    init_from_db: bool = Field(
        True, description="start from the database's stitched weights for the profile"
    )
    measure_repeats: int = Field(100, ge=3, description="timed runs per model (speedup check)")
    measure_passes: int = Field(
        5, ge=1, description="passes over all models, so each is timed across the whole check"
    )
    measure_block_seconds: float = Field(
        0.25,
        ge=0.0,
        description="each model's block in a pass runs at least this long (fast models get "
        "more runs than their share of measure_repeats)",
    )

    @model_validator(mode="after")
    def _schedule(self) -> GmpParams:
        if self.start_epoch >= self.end_epoch:
            raise ValueError(
                f"start_epoch ({self.start_epoch}) must be below end_epoch ({self.end_epoch})"
            )
        if len(set(self.seeds)) != len(self.seeds) or len(set(self.profiles)) != len(self.profiles):
            raise ValueError("seeds and profiles must not repeat")
        if self.measure_passes > self.measure_repeats:
            raise ValueError(
                f"measure_passes ({self.measure_passes}) must not exceed measure_repeats "
                f"({self.measure_repeats}): every pass times each model at least once"
            )
        return self


class VerifyParams(_Section):
    """Every one-shot profile's speedup measured end to end; one measured outside
    ``target x (1 -/+ tolerance)`` is chosen again by its own rule for a corrected aim
    (``pruneflow.spdy.verify``)."""

    rounds: int = Field(
        4,
        ge=0,
        le=20,
        description="re-aims after a profile measured off its target (0: profiles as the table "
        "chose them, not measured)",
    )
    tolerance: float = Field(
        0.03, ge=0.0, lt=0.5, description="a profile is on target within (1 -/+ this) x target"
    )


def cpu_capability() -> str:
    """torch's CPU capability of this host (``AVX512``, ``AVX2``, ``DEFAULT``, ...): the vector
    instructions its kernels and pruneflow's numba kernels use, which set how far a timing
    table reaches (mlp1024: about 25x on AVX-512 hosts, 13-21x on AVX2 ones)."""
    import torch  # here, not at the top: reading params must not cost torch's import

    return str(torch.backends.cpu.get_cpu_capability())


def _check_targets(value: list[float]) -> list[float]:
    bad = [t for t in value if not t > 1.0]
    if bad:
        raise ValueError(f"speedup targets must be > 1, got {bad}")
    if len(set(value)) != len(value):
        raise ValueError(f"duplicate targets in {value}")
    return value


class SpdyParams(_Section):
    """The SPDY experiment: its data, models, dense training, grid and timing."""

    dataset: DatasetName = "mnist5k"
    noise_rate: float = Field(0.0, ge=0.0, lt=1.0)
    models: list[ModelName] = ["mlp1024"]
    weights: dict[str, str] = Field(
        {},
        description="a trained checkpoint per model (MODEL: path): that model's dense "
        "training is skipped (see model.weights)",
    )
    train: TrainParams = TrainParams(
        epochs=5, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine"
    )
    grid: GridParams = GridParams()
    timing: TimingParams = TimingParams()
    recon: ReconParams = ReconParams()
    targets: list[float] = Field(
        [1.5, 2.0, 2.5, 3.0], min_length=1, description="end-to-end speedup targets"
    )
    model_targets: dict[str, list[float] | dict[str, list[float]]] = Field(
        {
            "mlp1024": {"AVX512": [8.0, 12.0, 16.0], "default": [4.0, 7.0, 10.0]},
            "smallcnn_w8": [2.5, 3.0, 3.25],
        },
        description="per model, its own targets instead of `targets` (MODEL: [..]), or per "
        "CPU capability (MODEL: {AVX512: [..], default: [..]}): models reach very different "
        "speedups on one runtime (a CSR MLP 20x, a narrow CNN 2-5x), and one model's timing "
        "table reaches about twice as far on an AVX-512 host as on an AVX2 one",
    )
    search: SearchParams = SearchParams()
    verify: VerifyParams = VerifyParams()
    gmp: GmpParams = GmpParams()

    @field_validator("targets")
    @classmethod
    def _targets_above_one(cls, value: list[float]) -> list[float]:
        return _check_targets(value)

    @field_validator("model_targets")
    @classmethod
    def _model_targets_above_one(
        cls, value: dict[str, list[float] | dict[str, list[float]]]
    ) -> dict[str, list[float] | dict[str, list[float]]]:
        for model, targets in value.items():
            by_cpu = targets if isinstance(targets, dict) else {"": targets}
            if not by_cpu:
                raise ValueError(f"{model}: no targets")
            for cpu, listed in by_cpu.items():
                where = f"{model} ({cpu})" if cpu else model
                if not listed:
                    raise ValueError(f"{where}: no targets")
                try:
                    _check_targets(listed)
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from None
        return value

    def targets_for(self, model: str, cpu: str | None = None) -> list[float]:
        """The speedup targets of ``model`` on a host of CPU capability ``cpu`` (default: this
        host's, :func:`cpu_capability`): its own (``model_targets``; where they are given per
        capability, this one's, else their ``default``) or ``targets``."""
        return self._targets_entry(model, cpu)[1]

    def targets_key(self, model: str, cpu: str | None = None) -> str:
        """The params key :meth:`targets_for` read (``spdy.model_targets.mlp1024.AVX512``, ...):
        what a user changes when a target does not suit this host."""
        return self._targets_entry(model, cpu)[0]

    def _targets_entry(self, model: str, cpu: str | None) -> tuple[str, list[float]]:
        own = self.model_targets.get(model)
        if own is None:
            return "spdy.targets", list(self.targets)
        if isinstance(own, list):
            return f"spdy.model_targets.{model}", list(own)
        cpu = cpu or cpu_capability()
        for key in (cpu, "default"):
            if key in own:
                return f"spdy.model_targets.{model}.{key}", list(own[key])
        return "spdy.targets", list(self.targets)

    @model_validator(mode="after")
    def _weights_of_models(self) -> SpdyParams:
        _check_weights_of_models(self.weights, self.models)
        return self


def _check_weights_of_models(weights: dict[str, str], models: list[str]) -> None:
    unknown = sorted(set(weights) - set(models))
    if unknown:
        raise ValueError(f"weights given for {unknown}, which are not in models {models}")


SDD_METHODS = ("magnitude", "gradient", "random")
SDD_MODES = ("finetune", "rewind", "reinit")


class PhaseParams(_Section):
    """How the four phases are read off a test-accuracy curve (see pruneflow.sdd.phases)."""

    standard_errors: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="a change between levels counts when it exceeds this many standard errors "
        "of the difference (test-sample binomial error and seed spread)",
    )
    smooth: int = Field(
        1, ge=1, le=15, description="levels in the centred moving average applied first (1: none)"
    )


class SddParams(_Section):
    """The sparse double descent experiment (He et al., ICML'22): data, dense training, sweep."""

    dataset: DatasetName = "mnist5k"
    noise_rate: float = Field(0.2, ge=0.0, lt=1.0, description="symmetric noise on train labels")
    models: list[ModelName] = ["lenet300100"]
    weights: dict[str, str] = Field(
        {},
        description="a trained checkpoint per model (MODEL: path): that model's dense "
        "training is skipped, its weights are every seed's level 0 (see model.weights)",
    )
    include: list[str] = Field(
        [],
        description="glob patterns of the layers the sweep prunes (empty: every Conv2d/Linear, "
        "as He et al. prune globally)",
    )
    exclude: list[str] = Field([], description="glob patterns of layers the sweep leaves dense")
    # measured on mnist5k / lenet300100 (see the sweep's report): 30 epochs of Adam memorise
    # ~98 % of the noisy labels, and the double descent shows within a few CPU minutes
    train: TrainParams = TrainParams(
        epochs=30, batch_size=128, optimizer="adam", lr=2e-3, schedule="cosine"
    )
    retrain: TrainParams = TrainParams(
        epochs=20, batch_size=128, optimizer="adam", lr=2e-3, schedule="cosine"
    )
    methods: list[Literal[SDD_METHODS]] = Field(["magnitude"], min_length=1)
    # finetune shows the four phases at the default sizes; rewind and reinit (which retrains
    # the rewind chain's masks) are the lottery-ticket comparison
    modes: list[Literal[SDD_MODES]] = Field(["finetune", "rewind", "reinit"], min_length=1)
    seeds: list[int] = Field([0, 1, 2, 3, 4], min_length=1)
    scope: Literal["global", "layerwise"] = "global"
    prune_fraction: float = Field(
        0.4, gt=0.0, lt=1.0, description="share of the remaining weights each round removes"
    )
    final_sparsity: float = Field(
        0.999, gt=0.0, lt=1.0, description="the sweep runs until a level reaches it"
    )
    rewind_epoch: int = Field(
        0, ge=0, description="rewind mode: dense-training epoch whose weights levels restart from"
    )
    gradient_batches: int = Field(
        8, ge=1, le=1000, description="gradient scores: batches (of retrain.batch_size) summed"
    )
    phases: PhaseParams = PhaseParams()

    @field_validator("rewind_epoch")
    @classmethod
    def _within_training(cls, value: int, info: Any) -> int:
        train = info.data.get("train")
        if train is not None and value > train.epochs:
            raise ValueError(
                f"must be at most sdd.train.epochs ({train.epochs}): the rewind point is an "
                "epoch of dense training"
            )
        return value

    @field_validator("methods", "modes", "seeds", "models")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists each entry once, got {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(s < 0 for s in value):
            raise ValueError(f"seeds must be >= 0, got {value}")
        return value

    @field_validator("modes")
    @classmethod
    def _reinit_needs_rewind(cls, value: list[str]) -> list[str]:
        if "reinit" in value and "rewind" not in value:
            raise ValueError(
                "reinit retrains the rewind chain's masks from fresh weights (He et al.), "
                "so sdd.modes must list rewind too"
            )
        return value

    @model_validator(mode="after")
    def _weights_of_models(self) -> SddParams:
        _check_weights_of_models(self.weights, self.models)
        if self.weights and self.rewind_epoch > 0:
            raise ValueError(
                f"rewind_epoch = {self.rewind_epoch} rewinds to an epoch of dense training, "
                "and sdd.weights skips it: set rewind_epoch to 0 (the seed's initialisation)"
            )
        return self


CHEX_METHODS = ("chex", "static", "l1_norm", "slimming")
# CHEX ablations and diagnostics (pruneflow.chex.methods): which ingredient a result depends on
CHEX_VARIANTS = (
    "no_realloc",
    "no_regrow",
    "explore_25",
    "explore_75",
    "mask_at_init",
    "arch_scratch",
)


class ChexLatencyParams(_Section):
    """How CPU latency of the dense and extracted models is measured."""

    threads: int = Field(1, ge=1, le=512)
    batch_size: int = Field(64, ge=1)
    repeats: int = Field(20, ge=1)


class ChexCompareParams(_Section):
    """CHEX against static and prune-then-fine-tune networks at equal FLOPs and epochs."""

    targets: list[float] = Field([0.7, 0.9], min_length=1, description="FLOPs reductions")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    methods: list[Literal[CHEX_METHODS]] = list(CHEX_METHODS)  # type: ignore[valid-type]
    dense_reference: bool = Field(True, description="also train the dense model per seed")
    pretrain_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="l1_norm, slimming: share of the epochs pre-trained"
    )
    finetune_lr: float = Field(
        0.1, gt=0.0, le=10.0, description="l1_norm, slimming: fine-tune LR (chosen on val)"
    )
    slimming_l1: float = Field(
        1e-5, ge=0.0, le=1.0, description="slimming: L1 penalty on BN scales while pre-training"
    )
    ablations: list[Literal[CHEX_VARIANTS]] = Field(  # type: ignore[valid-type]
        ["no_realloc"],
        description="CHEX variants to run too (see pruneflow.chex.methods.apply_variant)",
    )
    ablation_targets: list[float] | None = Field(
        [0.9], description="targets of the ablation runs (null: the same as targets)"
    )

    @model_validator(mode="after")
    def _targets_in_range(self) -> ChexCompareParams:
        bad = [t for t in [*self.targets, *(self.ablation_targets or [])] if not 0.0 < t < 1.0]
        if bad:
            raise ValueError(f"targets must be FLOPs reductions in (0, 1), got {bad}")
        return self


class ChexParams(_Section):
    """The CHEX experiment: its data, models, training recipe, exploration and comparison."""

    dataset: DatasetName = "mnist5k"
    noise_rate: float = Field(0.0, ge=0.0, lt=1.0)
    models: list[ModelName] = ["resnet_mini"]
    weights: dict[str, str] = Field(
        {},
        description="a trained checkpoint per model (MODEL: path): CHEX still trains from "
        "scratch; the weights are the comparison's dense reference instead of a dense run",
    )
    include: list[str] = Field(
        [],
        description="glob patterns of the convs whose output channels are explored and pruned "
        "(empty: every channel group); a group is pruned when one of its convs matches",
    )
    exclude: list[str] = Field(
        [],
        description="glob patterns of convs whose channels stay whole (their whole channel "
        "group: channels meeting in a residual sum are kept or removed together)",
    )
    train: TrainParams = TrainParams(
        epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="cosine"
    )
    shift: int = Field(2, ge=0, le=16, description="random shifts of up to this many pixels")
    flops_reduction: float | None = Field(
        0.7, ge=0.0, lt=1.0, description="target: 1 - extracted FLOPs / dense FLOPs"
    )
    sparsity: float | None = Field(
        None, ge=0.0, lt=1.0, description="target channel sparsity S (when flops_reduction is null)"
    )
    delta_t: float = Field(1.0, gt=0.0, description="epochs between prune/regrow steps")
    t_max: float = Field(21.0, gt=0.0, description="epochs of exploration (then fixed)")
    delta0: float = Field(0.3, ge=0.0, le=1.0, description="initial regrowing fraction")
    min_fraction: float = Field(
        0.1, gt=0.0, le=1.0, description="every layer keeps this share of its channels (>= 1)"
    )
    realloc: bool = Field(True, description="False: uniform per-layer counts (ablation)")
    latency: ChexLatencyParams = ChexLatencyParams()
    compare: ChexCompareParams = ChexCompareParams()

    @model_validator(mode="after")
    def _consistent(self) -> ChexParams:
        _check_weights_of_models(self.weights, self.models)
        if (self.flops_reduction is None) == (self.sparsity is None):
            raise ValueError("set exactly one of flops_reduction and sparsity (the other null)")
        if self.delta_t > self.t_max:
            raise ValueError(
                f"delta_t ({self.delta_t} epochs) is larger than t_max ({self.t_max} epochs)"
            )
        if self.t_max > self.train.epochs:
            raise ValueError(
                f"t_max ({self.t_max} epochs) is beyond the end of training "
                f"(train.epochs = {self.train.epochs})"
            )
        return self


class ExportParams(_Section):
    """What `pruneflow export` (stages spdy_export, chex_export) writes of a pruned model:
    SPDY's gradual-pruning run of this profile, target and seed, or CHEX's extracted model;
    as safetensors and ONNX, checked and timed in onnxruntime."""

    profile: Literal["spdy", "uniform", "gmp"] = Field(
        "spdy", description="SPDY: which profile's gradual-pruning run (spdy.gmp.profiles)"
    )
    target: float | None = Field(
        None, gt=1.0, description="SPDY: which speedup target (null: the model's highest)"
    )
    seed: int = Field(0, ge=0, description="SPDY: which gradual-pruning seed (spdy.gmp.seeds)")
    opset: int = Field(17, ge=17, le=23, description="ONNX opset")
    check_samples: int = Field(
        64, ge=1, description="test images run in torch and onnxruntime, outputs compared"
    )
    atol: float = Field(1e-4, gt=0.0, description="onnxruntime vs torch: absolute tolerance")
    rtol: float = Field(1e-3, ge=0.0, description="onnxruntime vs torch: relative tolerance")
    batch_size: int = Field(8, ge=1, description="images per onnxruntime timing run")
    repeats: int = Field(20, ge=1, description="timed onnxruntime runs per model (the median)")
    threads: int = Field(1, ge=1, le=512, description="onnxruntime intra-op threads")


class DaskParams(_Section):
    """Where ``runner: dask`` runs the fan-out steps' items."""

    workers: int = Field(
        2, ge=1, le=256, description="worker processes of the local cluster (address: null)"
    )
    address: str | None = Field(
        None,
        description=(
            "an existing scheduler, e.g. tcp://10.0.0.5:8786 (its workers run in the same "
            "folder on a shared mount); null: a local cluster of `workers` processes"
        ),
    )
    connect_timeout: float = Field(
        10.0, gt=0.0, le=600.0, description="seconds to reach the scheduler before giving up"
    )

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "tls://", "ucx://")):
            raise ValueError("expected a Dask scheduler address like tcp://HOST:8786, or null")
        return value


class OrchestrationParams(_Section):
    runner: Literal["thread", "dask"] = Field(
        "thread",
        description=(
            "how fan-out items run: thread (the flow's thread pool, one process) or dask "
            "(worker processes of a local cluster, or of the scheduler at dask.address)"
        ),
    )
    workers: int | None = Field(
        None,
        ge=1,
        description=(
            "runner thread: fan-out items run at most this many at a time; null = the host's "
            "cores (every item is compute-bound: more at once only oversubscribes them)"
        ),
    )
    dask: DaskParams = DaskParams()
    server: str = Field(
        "local",
        description=(
            "Prefect API: 'local' (start one server once and reuse it), 'ephemeral' (a "
            "temporary server per process) or an http(s) URL"
        ),
    )
    server_grace: float = Field(
        30.0,
        ge=1.0,
        le=600.0,
        description=(
            "seconds a run goes on after its Prefect server stopped answering, then it stops "
            "with one line (the finished steps are in the step cache: a re-run resumes)"
        ),
    )

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        if value not in ("local", "ephemeral") and not value.startswith(("http://", "https://")):
            raise ValueError("expected 'local', 'ephemeral' or an http(s):// URL")
        return value


# --- structured: latency-constrained channel widths ------------------------------


class StructuredTimingParams(_Section):
    """How the structured timing table is measured (the unstructured profiler's discipline)."""

    threads: int = Field(1, ge=1, le=512)
    batch_size: int = Field(32, ge=1, description="images per timed forward pass")
    warmup: int = Field(2, ge=0)
    min_repeats: int = Field(3, ge=1)
    max_repeats: int = Field(15, ge=1)
    rel_tol: float = Field(0.03, gt=0.0, lt=1.0, description="stop once the median is this stable")
    max_seconds: float = Field(0.2, gt=0.0, description="time cap per sweep (round, group, level)")
    rounds: int = Field(3, ge=1, description="sweeps over the thinned models, in a new order each")
    quantile: float = Field(
        0.1, gt=0.0, lt=1.0, description="each entry: this quantile of its runs over the rounds"
    )
    smooth_window: int = Field(
        3, ge=1, description="levels per local linear fit of a group's times (1: as measured)"
    )
    seed: int = Field(0, ge=0, description="the random inputs and the rounds' level orders")


class StructuredReconParams(_Section):
    """Which channels each width keeps and the least-squares refit of their consumers."""

    importance: Literal["l1", "css"] = Field(
        "l1", description="l1: producers' filter L1 norms; css: CHEX's leverage scores"
    )
    calib_samples: int = Field(512, ge=1, description="calibration images from the train split")
    calib_seed: int = Field(0, ge=0)
    rows: int = Field(8192, ge=16, description="sampled positions per consumer for the refit")
    damp: float = Field(0.01, gt=0.0, lt=1.0, description="ridge: this fraction of mean diagonal")
    max_columns: int = Field(
        4096, ge=1, description="consumers with more kept input columns are masked, not refitted"
    )


STRUCTURED_BASELINES = ("search", "uniform", "chex_realloc", "tp_magnitude")


class StructuredCompareParams(_Section):
    """The searched profile against FLOPs-, MACs- and uniform-width profiles at equal measured
    latency, each fine-tuned alike (``structured.finetune_epochs``, ``finetune_lr``)."""

    methods: list[Literal[STRUCTURED_BASELINES]] = list(STRUCTURED_BASELINES)  # type: ignore[valid-type]
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="fine-tuning seeds (paired)")
    calibration_steps: int = Field(
        7, ge=1, le=30, description="bisection steps of a baseline's budget on measured speedup"
    )
    calibration_repeats: int = Field(
        20, ge=3, description="timed runs per model while calibrating (alternating passes: 2)"
    )
    tp_max_ratio: float = Field(
        0.9, gt=0.0, lt=1.0, description="Torch-Pruning: max_pruning_ratio of any layer"
    )


class StructuredVerifyParams(VerifyParams):
    """The search's and the uniform profile's realized speedup measured end to end before
    fine-tuning and re-aimed (``pruneflow.structured.verify``), one tolerance above the target;
    the baselines' bisection keeps a budget measured at or above the target when one was."""

    rounds: int = Field(
        3, ge=0, le=20, description="re-aims after a realized profile measured off its target"
    )
    tolerance: float = Field(
        0.03,
        ge=0.0,
        lt=0.5,
        description="aim at target x (1 + this), on target within (1 -/+ this) of that aim",
    )
    floor: float = Field(
        0.95,
        gt=0.0,
        le=1.0,
        description="a profile measured below this fraction of its target is one error line",
    )


class StructuredSearchParams(SearchParams):
    """SPDY's search over width levels (``spdy.search``'s keys), then a short fine-tuning of
    its best few distinct profiles to choose among them (not in SPDY: docs/structured.md)."""

    bn: Literal["eval", "train"] = Field(
        "train", description="BatchNorm while scoring: running stats, or calibration-batch stats"
    )
    finetune_top_k: int = Field(
        4,
        ge=0,
        le=64,
        description="the search's best this many distinct width profiles are each fine-tuned "
        "finetune_steps steps and the one of least validation loss after that is kept (0 or 1: "
        "the search's best, as SPDY keeps it)",
    )
    finetune_steps: int = Field(
        30,
        ge=1,
        le=100_000,
        description="optimizer steps of that short fine-tuning: the first steps of the "
        "comparison's fine-tuning (structured.finetune_lr, structured.train's recipe and seed)",
    )
    reaim: Literal["search", "dp"] = Field(
        "search",
        description="a profile measured off its target is chosen again by a new search for the "
        "corrected aim (search), or by the DP with the first search's sensitivities (dp, SPDY's "
        "rule)",
    )


class StructuredParams(_Section):
    """Latency-constrained structured profiles: SPDY's DP and search over channel widths."""

    dataset: DatasetName = "mnist5k"
    noise_rate: float = Field(0.0, ge=0.0, lt=1.0)
    models: list[ModelName] = ["resnet_mini", "smallcnn"]
    train: TrainParams = TrainParams(
        epochs=5, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine"
    )
    levels: int = Field(10, ge=2, le=64, description="width levels per group, 1.0 down")
    min_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="the narrowest kept fraction")
    multiple: int = Field(1, ge=1, description="kept channels are rounded to this multiple")
    min_channels: int = Field(
        2, ge=1, description="no group keeps fewer channels: narrower grid levels are dropped"
    )
    timing: StructuredTimingParams = StructuredTimingParams()
    recon: StructuredReconParams = StructuredReconParams()
    targets: list[float] = Field([1.5, 2.0], min_length=1, description="measured speedups")
    search: StructuredSearchParams = StructuredSearchParams()
    score_split: Literal["val", "calibration"] = Field(
        "val",
        description="images the search scores candidates on: the validation split (seen by "
        "neither the dense training nor the refit) or the database's calibration set",
    )
    finetune_epochs: int = Field(3, ge=0, description="epochs of fine-tuning the thinned model")
    finetune_lr: float = Field(0.01, gt=0.0, le=10.0)
    measure_repeats: int = Field(60, ge=3, description="timed runs per model (speedup check)")
    measure_passes: int = Field(3, ge=1, description="passes the timed runs are spread over")
    measure_block_seconds: float = Field(
        0.25,
        ge=0.0,
        description="each model's block in a pass runs at least this long (resnet_mini runs in "
        "6 ms: 10-run blocks read the same model 0.92 and 1.01 of its target minutes apart)",
    )
    verify: StructuredVerifyParams = StructuredVerifyParams()
    compare: StructuredCompareParams = StructuredCompareParams()


class PathsParams(_Section):
    artifacts: str = "artifacts"
    metrics: str = "metrics"


class Params(_Section):
    preset: str = Field(
        "default",
        description="which settings these are, shown in the report: default (the quick run of "
        "every method), full (presets/full.yaml, the papers' full experiments) or smoke "
        "(presets/smoke.yaml, every step in minutes, no claims)",
    )
    claims: bool = Field(
        True,
        description="read each paper's claims off this run's results (report, `pruneflow run`'s "
        "last table, metrics/claims.json); presets/smoke.yaml turns it off: its one seed and "
        "tiny settings support no verdict",
    )
    runtime: RuntimeParams = RuntimeParams()
    data: DataParams = DataParams()
    noise: NoiseParams = NoiseParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    spdy: SpdyParams = SpdyParams()
    sdd: SddParams = SddParams()
    chex: ChexParams = ChexParams()
    structured: StructuredParams = StructuredParams()
    export: ExportParams = ExportParams()
    orchestration: OrchestrationParams = OrchestrationParams()
    paths: PathsParams = PathsParams()

    def get(self, dotted: str) -> Any:
        """The value at a dotted key, e.g. ``params.get("noise.rate")``."""
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, BaseModel) or part not in type(node).model_fields:
                raise PruneflowError(f"unknown parameter '{dotted}'")
            node = getattr(node, part)
        return node.model_dump(mode="json") if isinstance(node, BaseModel) else node


SCOPED_METHODS = ("spdy", "sdd", "chex", "structured")


def _parse_scope(params: Params, scope: str) -> tuple[str, str | None]:
    method, _, model = scope.partition(":")
    if method not in SCOPED_METHODS:
        raise PruneflowError(
            f"scope must be METHOD or METHOD:MODEL with METHOD one of "
            f"{', '.join(SCOPED_METHODS)}, got '{scope}'"
        )
    models = getattr(params, method).models
    if model and model not in models:
        raise PruneflowError(f"{method}.models is {models}: '{model}' is not one of them")
    return method, model or None


def scoped(params: Params, scope: str | None) -> Params:
    """One method's view of the params, so the shared steps (prepare, train_dense) serve every
    method without their outputs colliding.

    ``"spdy"`` takes data set and noise rate from the ``spdy`` section; ``"spdy:smallcnn"``
    also sets the model and takes the dense training from ``spdy.train``. ``None`` returns
    ``params`` unchanged.
    """
    if not scope:
        return params
    method, model = _parse_scope(params, scope)
    section = getattr(params, method)
    update: dict[str, Any] = {
        "data": params.data.model_copy(update={"dataset": section.dataset}),
        "noise": params.noise.model_copy(update={"rate": section.noise_rate}),
    }
    if model:
        weights = getattr(section, "weights", {}).get(model)
        update |= {"model": ModelParams(name=model, weights=weights), "train": section.train}
        if method == "spdy":  # the model's own targets are the view's targets
            update["spdy"] = section.model_copy(update={"targets": section.targets_for(model)})
    return params.model_copy(update=update)


def scoped_source(scope: str | None, key: str) -> str | None:
    """Which params.yaml key a scoped params key comes from (for DVC's ``params:`` lists).

    ``("spdy:mlp1024", "train.lr")`` -> ``"spdy.train"``; ``model.name`` under a model scope
    -> None (the scope itself fixes it); unscoped keys map to themselves.
    """
    if not scope:
        return key
    method, _, model = scope.partition(":")
    if key == "data.dataset":
        return f"{method}.dataset"
    if key == "noise.rate":
        return f"{method}.noise_rate"
    if model and key == "model.name":
        return None
    if model and key == "model.weights":
        return f"{method}.weights"
    if model and key.startswith("train."):
        return f"{method}.train"
    return key


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` -> ``("train.epochs", 5)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PruneflowError(f"--set expects dotted.key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise PruneflowError(f"--set {key}: cannot read value '{raw}': {exc}") from exc
    return key.strip(), value


def _apply_override(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise PruneflowError(f"--set {key}: '{part}' is not a section")
        node = child
    node[leaf] = value


def _describe(err: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = err["loc"][:-1]
        model: Any = Params
        for part in parent:
            model = model.model_fields[part].annotation
        allowed = ", ".join(model.model_fields)
        return f"{source}: unknown key '{key}' (allowed here: {allowed})"
    msg = err["msg"].removeprefix("Value error, ")
    bounds = _bounds(err["loc"])
    allowed = f" (allowed: {bounds})" if bounds else ""
    return f"{source}: {key} = {err.get('input')!r}: {msg}{allowed}"


def _bounds(loc: tuple[Any, ...]) -> str:
    """'0.0 <= rate < 1.0' from a numeric field's constraints, or '' when it has none."""
    model: Any = Params
    for part in loc[:-1]:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return ""
        model = field.annotation
    field = getattr(model, "model_fields", {}).get(loc[-1]) if loc else None
    if field is None:
        return ""
    lower = upper = ""
    for m in field.metadata:
        for attr, text in (("ge", "<="), ("gt", "<")):
            if getattr(m, attr, None) is not None:
                lower = f"{getattr(m, attr)} {text} "
        for attr, text in (("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                upper = f" {text} {getattr(m, attr)}"
    return f"{lower}{loc[-1]}{upper}" if lower or upper else ""


def from_dict(tree: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        raise PruneflowError("; ".join(_describe(e, source) for e in exc.errors())) from None


BASE_FILE = "params.yaml"


def merge(
    base: dict[str, Any], overlay: dict[str, Any], section: type[BaseModel] | None = None
) -> dict[str, Any]:
    """``overlay``'s keys onto ``base``: sections (``spdy.train``) merge key by key, any other
    value replaces, a mapping-valued knob too (``spdy.grid.model_min_sparsity: {}``)."""
    section = section or Params
    out = dict(base)
    for key, value in overlay.items():
        field = section.model_fields.get(key)
        kind = field.annotation if field is not None else None
        nested = isinstance(kind, type) and issubclass(kind, BaseModel)
        if nested and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, kind)
        else:
            out[key] = value
    return out


def updated(params: Params | None = None, **sections: dict[str, Any] | None) -> Params:
    """``params`` (the defaults when None) with some sections' keys changed, validated:
    ``updated(p, sdd={"seeds": [0, 1], "retrain": {"epochs": 1}})`` (sections merge key by key,
    see :func:`merge`)."""
    changes = {name: keys for name, keys in sections.items() if keys}
    return from_dict(merge((params or Params()).model_dump(mode="json"), changes))


def _read_tree(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise PruneflowError(f"params file {path} is a folder, not a YAML file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PruneflowError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
    except (UnicodeDecodeError, OSError) as exc:  # a binary file, an unreadable one
        raise PruneflowError(f"params file {path} is not readable YAML text: {exc}") from exc
    if not isinstance(tree, dict):
        raise PruneflowError(f"{path}: expected a mapping of sections, got {type(tree).__name__}")
    return tree


def load(path: str | Path = BASE_FILE, overrides: list[str] | None = None) -> Params:
    """Read ``path``, apply ``--set`` overrides, validate.

    ``params.yaml`` holds every key (a missing one means the defaults, which equal it). A
    params file of any other name (a preset: ``presets/full.yaml``) is an *overlay*: only the
    keys it changes, merged onto the ``params.yaml`` of the current folder, or onto the
    defaults where there is none. Every file merges onto the defaults key by key, so a partial
    section keeps its own defaults (``spdy.train: {epochs: 3}``: spdy.train's batch size).
    """
    path = Path(path)
    base = Path(BASE_FILE)
    if not path.exists():
        if path.name != BASE_FILE:
            raise PruneflowError(f"params file {path} does not exist")
        tree: dict[str, Any] = {}
    else:
        tree = _read_tree(path)
        if path.name != BASE_FILE and base.exists():
            tree = merge(_read_tree(base), tree)
    for text in overrides or []:
        _apply_override(tree, *parse_override(text))
    return from_dict(merge(Params().model_dump(mode="json"), tree), source=str(path))
