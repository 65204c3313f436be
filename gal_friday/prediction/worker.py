"""Inference worker processes: each loads every model once, then answers row predictions.

Runs in a ``ProcessPoolExecutor`` so LightGBM's CPU work never blocks the event loop. Boosters
are loaded in the pool initializer (not per call) and pinned to one thread each, since the pool
itself provides the parallelism.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from gal_friday.prediction.model import Calibration, load_booster, load_metadata

_models: dict[str, tuple[object, Calibration]] = {}


def init_worker(model_dirs: list[str]) -> None:
    """Pool initializer: load each booster and its calibration map once per process."""
    os.environ["OMP_NUM_THREADS"] = "1"  # before LightGBM loads OpenMP: the pool is the parallelism
    for directory in model_dirs:
        path = Path(directory)
        meta = load_metadata(path)
        _models[meta.model_id] = (load_booster(path), meta.calibration)


def predict_rows(requests: list[tuple[str, list[float]]]) -> tuple[list[float], int]:
    """Calibrated up-probabilities for ``(model_id, feature row)`` requests, and the time the
    inference itself took in nanoseconds."""
    start = time.perf_counter_ns()
    out = []
    for model_id, row in requests:
        booster, calibration = _models[model_id]
        raw = float(booster.predict(np.asarray([row], dtype=np.float64))[0])  # type: ignore[attr-defined]
        out.append(calibration.apply(raw))
    return out, time.perf_counter_ns() - start


def loaded_models() -> list[str]:
    """Model ids this process holds (for warm-up checks)."""
    return sorted(_models)
