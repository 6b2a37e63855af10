"""Layer timing on the target hardware: sparse execution backends, the runtime that runs a
pruned model on them, and the profiler that fills SPDY's timing table.

Imports no Prefect; everything here is plain torch/numba/pandas.
"""

from pruneflow.timing.backends import (
    Backend,
    available_backends,
    build_layer,
    get_backend,
    register_backend,
    registered_backends,
    unregister_backend,
)
from pruneflow.timing.measure import (
    Timing,
    clock_ns,
    measure,
    measure_interleaved,
    measure_speedups,
    thread_scope,
    timed_call,
)
from pruneflow.timing.profiler import (
    DEFAULT_BATCH_SIZES,
    ProfileSettings,
    default_batch_size,
    exact_mask,
    profile_model,
    progress_calls,
)
from pruneflow.timing.runtime import SparseRuntime, prepare_inference_model
from pruneflow.timing.table import (
    COLUMNS,
    bench_host,
    host_description,
    predict_ms,
    read_timing_table,
    time_matrix,
    write_timing_table,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_BATCH_SIZES",
    "Backend",
    "ProfileSettings",
    "SparseRuntime",
    "Timing",
    "available_backends",
    "build_layer",
    "clock_ns",
    "default_batch_size",
    "exact_mask",
    "get_backend",
    "bench_host",
    "host_description",
    "measure",
    "measure_interleaved",
    "measure_speedups",
    "predict_ms",
    "prepare_inference_model",
    "profile_model",
    "progress_calls",
    "read_timing_table",
    "register_backend",
    "registered_backends",
    "thread_scope",
    "time_matrix",
    "timed_call",
    "unregister_backend",
    "write_timing_table",
]
