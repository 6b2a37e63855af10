"""Latency-constrained structured profiles: SPDY's measure-then-solve over channel widths.

Channel groups come from CHEX's dependency graph (:mod:`pruneflow.structured.widths`); every
group gets a width grid; the timing table holds the measured time of each group's physically
thinned layers at each width (:mod:`pruneflow.structured.timing`); the reconstruction database
holds which channels each width keeps and the least-squares refit of the consuming layers
(:mod:`pruneflow.structured.database`); SPDY's DP and sensitivity search choose one width per
group under a measured-latency budget (:mod:`pruneflow.structured.search`); the chosen widths
become a physically smaller model (:mod:`pruneflow.structured.realize`).
"""
