"""params.yaml: the pydantic models of every section, and the one way to load them.

Every knob a user may turn lives here, under the same dotted name the CLI's ``--set``, the flows
and ``dvc.yaml`` use (``noise.rate``, ``train.epochs``, ...). Validation happens before any work
starts: an unknown key, a wrong type or an out-of-range value stops with a single line naming
the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pruneflow.errors import PruneflowError
from pruneflow.models.zoo import MODEL_NAMES

DATASETS = ("digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeParams(_Section):
    threads: int = Field(2, ge=1, le=512, description="torch intra-op threads per process")
    flush_denormal: bool = Field(
        True, description="flush denormal floats to zero (6x faster training on this CPU)"
    )
    progress: Literal["auto", "on", "off"] = Field(
        "auto", description="progress bars: auto shows them only on a terminal"
    )


class DataParams(_Section):
    dataset: Literal[DATASETS] = "digits"  # type: ignore[valid-type]
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
    name: Literal[MODEL_NAMES] = "lenet300100"  # type: ignore[valid-type]


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


class OrchestrationParams(_Section):
    server: str = Field(
        "local",
        description=(
            "Prefect API: 'local' (start one server once and reuse it), 'ephemeral' (a "
            "temporary server per process) or an http(s) URL"
        ),
    )

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        if value not in ("local", "ephemeral") and not value.startswith(("http://", "https://")):
            raise ValueError("expected 'local', 'ephemeral' or an http(s):// URL")
        return value


class PathsParams(_Section):
    artifacts: str = "artifacts"
    metrics: str = "metrics"


class Params(_Section):
    runtime: RuntimeParams = RuntimeParams()
    data: DataParams = DataParams()
    noise: NoiseParams = NoiseParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
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


def load(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read ``path`` (a missing file means all defaults), apply ``--set`` overrides, validate."""
    path = Path(path)
    tree: Any = {}
    if path.exists():
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise PruneflowError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from exc
        if not isinstance(tree, dict):
            raise PruneflowError(
                f"{path}: expected a mapping of sections, got {type(tree).__name__}"
            )
    elif path.name != "params.yaml":
        raise PruneflowError(f"params file {path} does not exist")
    for text in overrides or []:
        _apply_override(tree, *parse_override(text))
    return from_dict(tree, source=str(path))
