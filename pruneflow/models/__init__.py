"""Model zoo: architectures by name and the ordered list of their prunable layers."""

from pruneflow.models.factory import build
from pruneflow.models.zoo import MODEL_NAMES, prunable_layers

__all__ = ["MODEL_NAMES", "build", "prunable_layers"]
