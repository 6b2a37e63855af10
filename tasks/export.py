"""Tasks exporting pruned models (safetensors + ONNX, checked in onnxruntime)."""

from pruneflow.steps.export import CHEX_EXPORT, SPDY_EXPORT
from tasks.common import as_task

spdy_export = as_task(SPDY_EXPORT)
chex_export = as_task(CHEX_EXPORT)
