"""Balance over the answered requests per CAS of the farm: max/mean, the coefficient of variation and
Jain's fairness index.

To say whether a skew is the balancer's doing or just the luck of few sessions, the same sessions
(weighted by their requests) are placed on the farm uniformly at random many times (seeded); the
figures give the percentile of the observed max/mean among those placements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

RANDOM_TRIALS = 200
SKEW_PERCENTILE = 95.0  # an observed max/mean above this share of random placements is the balancer's doing
TRIAL_CELLS = 2_000_000  # placements held in memory at once: trials per chunk x sessions


def balance_figures(load: np.ndarray, session_weights: np.ndarray, trials: int, seed: int) -> dict[str, Any]:
    """Spread figures of the per-CAS `load`, and where its max/mean falls among random placements of
    sessions of `session_weights` requests."""
    n_servers = len(load)
    load = load.astype(float)
    if n_servers == 0 or load.sum() == 0:
        return {"max_over_mean": math.nan, "cv": math.nan, "jain": math.nan, "random_placement_pct": math.nan,
                "random_max_over_mean_p50": math.nan, "random_max_over_mean_p95": math.nan,
                "exceeds_random": False}  # fmt: skip
    mean = load.mean()
    observed = load.max() / mean
    simulated = random_max_over_mean(session_weights.astype(float), n_servers, trials, seed)
    percentile = float((simulated < observed).mean() * 100 + (simulated == observed).mean() * 50)
    return {
        "max_over_mean": round(float(observed), 4),
        "cv": round(float(load.std() / mean), 4),
        "jain": round(float(load.sum() ** 2 / (n_servers * (load**2).sum())), 4),
        "random_placement_pct": round(percentile, 1),
        "random_max_over_mean_p50": round(float(np.percentile(simulated, 50)), 4),
        "random_max_over_mean_p95": round(float(np.percentile(simulated, 95)), 4),
        "exceeds_random": percentile > SKEW_PERCENTILE,
    }


def random_max_over_mean(session_weights: np.ndarray, n_servers: int, trials: int, seed: int) -> np.ndarray:
    """max/mean of the per-server load, once per trial, with each session on a uniformly random server."""
    rng = np.random.default_rng(seed)
    n_sessions = len(session_weights)
    chunk = max(1, min(trials, TRIAL_CELLS // max(n_sessions, 1)))
    out = []
    for start in range(0, trials, chunk):  # chunks of trials bound the memory, not a loop over events
        c = min(chunk, trials - start)
        # Trial t's servers are numbered t*n_servers.. so that one bincount sums every trial at once.
        placed = rng.integers(0, n_servers, size=(c, n_sessions)) + (np.arange(c) * n_servers)[:, None]
        loads = np.bincount(placed.ravel(), weights=np.tile(session_weights, c), minlength=c * n_servers)
        loads = loads.reshape(c, n_servers)
        out.append(loads.max(axis=1) / loads.mean(axis=1))
    return np.concatenate(out)
