"""Tiny settings of each method (8x8 digits, an epoch or two): the tests that run whole
methods or the whole pipeline build their params from these."""

SPDY = {
    "dataset": "digits",
    "models": ["lenet300100"],
    "train": {"epochs": 3, "batch_size": 128},
    "grid": {"min_sparsity": 0.5, "max_sparsity": 0.95, "steps": 12, "skip_first_last": False},
    # a batch large enough that the layers' arithmetic, not call overhead, sets their times:
    # at 256, the fastest profile of this tiny net measured 1.6-2.2x, and 2x was not always there
    "timing": {
        "batch_size": 1024,
        "min_repeats": 3,
        "max_repeats": 5,
        "max_seconds": 0.05,
        "min_seconds": 0.0,
    },
    "recon": {"calib_samples": 256, "batch_size": 128},
    "targets": [1.5, 2.0],
    "search": {"candidates": 20, "max_no_improvement": 10},
    # profiles as the table chose them: a measured re-aim would make the one-shot profiles
    # depend on this host's load (tests/test_spdy_verify.py measures and re-aims)
    "verify": {"rounds": 0},
    "gmp": {
        "seeds": [0],
        "end_epoch": 0.5,
        "finetune_epochs": 0.5,
        "batch_size": 64,
        "every_steps": 3,
        "measure_repeats": 5,
        "measure_passes": 1,
        "measure_block_seconds": 0.0,
    },
}
SDD = {
    "dataset": "digits",
    "train": {"epochs": 2, "batch_size": 128},
    "retrain": {"epochs": 1, "batch_size": 128},
    "modes": ["rewind"],
    "seeds": [0],
    "prune_fraction": 0.5,
    "final_sparsity": 0.7,
}
CHEX = {
    "dataset": "digits",
    "train": {"epochs": 2, "batch_size": 256, "lr": 0.1},
    "delta_t": 0.5,
    "t_max": 1.0,
    "latency": {"repeats": 3},
    "compare": {"targets": [0.7], "seeds": [0], "methods": ["chex", "static"], "ablations": []},
}
