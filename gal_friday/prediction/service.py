"""PredictionService: feature vectors in, combined probabilities out, never blocking the loop.

At start-up every model's metadata is checked against the feature engine's feature list (a
model needing a feature the engine does not produce is refused with a message that says so),
then an inference process pool (``pool.InferencePool``) starts whose workers load the models
once. Each FeatureEvent becomes one
pool call with a row per model; the probabilities are combined (weighted average, or a
weighted vote) and published as a PredictionEvent carrying the model id and the latency.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gal_friday.bus import EventBus, Policy
from gal_friday.events import FeatureEvent, PredictionEvent
from gal_friday.prediction.model import ModelError, ModelMetadata, check_features, load_metadata
from gal_friday.prediction.pool import InferencePool

log = logging.getLogger(__name__)

Combine = Literal["mean", "vote"]


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: its metadata, weight and where its features sit."""

    directory: Path
    meta: ModelMetadata
    weight: float
    positions: tuple[int, ...]


def load_models(
    directories: Sequence[Path],
    weights: Sequence[float] | None,
    engine_features: tuple[str, ...],
) -> list[LoadedModel]:
    """Validate every model against the engine's features; raise ModelError on the first
    problem (a bot must not start with a model it cannot feed correctly)."""
    if not directories:
        raise ModelError("no model configured; train one with 'gal-friday train'")
    weights = list(weights) if weights else [1.0] * len(directories)
    if len(weights) != len(directories) or any(w <= 0 for w in weights):
        raise ModelError("prediction weights must be positive, one per model")
    models = []
    for directory, weight in zip(directories, weights, strict=True):
        meta = load_metadata(directory)
        models.append(LoadedModel(directory, meta, weight, check_features(meta, engine_features)))
    ids = [m.meta.model_id for m in models]
    if len(set(ids)) != len(ids):
        raise ModelError(f"two configured models share an id: {ids}")
    return models


def combine(probabilities: Sequence[float], weights: Sequence[float], how: Combine) -> float:
    """Weighted mean of the probabilities, or the weighted share of models voting 'up'."""
    total = sum(weights)
    if how == "vote":
        return sum(w for p, w in zip(probabilities, weights, strict=True) if p > 0.5) / total
    return sum(p * w for p, w in zip(probabilities, weights, strict=True)) / total


class PredictionService:
    """Subscribes to FeatureEvent and publishes PredictionEvent."""

    def __init__(
        self, bus: EventBus, models: list[LoadedModel], *, how: Combine = "mean", workers: int = 1
    ) -> None:
        self.bus = bus
        self.models = models
        self.how = how
        self.workers = workers
        self.model_id = "+".join(m.meta.model_id for m in models)
        self._pool: InferencePool | None = None
        self.predictions = 0
        self.skipped_incomplete = 0

    async def start(self) -> None:
        """Start the pool, wait until every worker has loaded the models, then subscribe."""
        self._pool = InferencePool([str(m.directory) for m in self.models], self.workers)
        try:
            await self._pool.start()
        except BaseException:  # a model a worker refused: no worker left behind
            await self.stop()
            raise
        self.bus.subscribe(
            FeatureEvent, self.on_features, name="prediction", policy=Policy.BLOCK, maxsize=1024
        )
        log.info(
            "prediction service ready",
            extra={"models": self.model_id, "workers": self.workers, "combine": self.how},
        )

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.stop()
            self._pool = None

    async def on_features(self, event: FeatureEvent) -> None:
        received = time.time_ns()
        requests = []
        for model in self.models:
            row = [event.values[i] for i in model.positions]
            if any(math.isnan(v) for v in row):
                self.skipped_incomplete += 1  # warm-up or a missing book: no guess published
                return
            requests.append((model.meta.model_id, row))
        assert self._pool is not None, "start() the service first"
        probs, _ = await self._pool.predict(requests)
        prob = combine(probs, [m.weight for m in self.models], self.how)
        self.predictions += 1
        await self.bus.publish(
            PredictionEvent(
                pair=event.pair,
                ts_ns=time.time_ns(),
                model_id=self.model_id,
                prob_up=prob,
                features_ts_ns=event.ts_ns,
                latency_ns=time.time_ns() - received,
            )
        )
