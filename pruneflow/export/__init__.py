"""Taking a pruned model away: safetensors (weights with zeros, masks, per-layer sparsity) and
ONNX, checked and timed in onnxruntime."""

from pruneflow.export.onnx import check_onnx, export_onnx, ort_latency_ms
from pruneflow.export.pruned import layer_masks, load_pruned, save_pruned

__all__ = [
    "check_onnx",
    "export_onnx",
    "layer_masks",
    "load_pruned",
    "ort_latency_ms",
    "save_pruned",
]
