"""SPDY: learned sparsity profiles under a speedup budget (Frantar & Alistarh, ICML 2022).

``dp`` holds the exact dynamic-programming solver for the per-layer level choice and the time
discretization it works on.
"""
