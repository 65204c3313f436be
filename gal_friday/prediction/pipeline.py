"""``gal-friday train`` end to end, and the simulator's demo model.

Candles come from a file, or are downloaded for the pair (from Kraken, or from the simulator
when ``exchange = "sim"``) through the same resumable download as ``gal-friday download``.
Features are the batch candle features, which the tests prove equal to the live ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gal_friday.candles import CandleSeries, read_candles
from gal_friday.config import Settings
from gal_friday.download import default_output, download_candles
from gal_friday.features import batch_candle_features
from gal_friday.kraken.rest import KrakenPublicRest
from gal_friday.prediction.training import TrainResult, TrainSpec, spec_from_settings, train_model

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = "models/sim-demo"


def feature_rows(series: CandleSeries) -> CandleSeries:
    """Only candles that are feature rows (traded, positive prices), so labels and features
    describe the same rows."""
    keep = (series.volume > 0.0) & (series.low > 0.0)
    return CandleSeries(
        series.time_s[keep],
        series.open[keep],
        series.high[keep],
        series.low[keep],
        series.close[keep],
        series.volume[keep],
        series.trades[keep],
    )


def train_from_candles(
    settings: Settings,
    candles: CandleSeries,
    out_dir: Path,
    *,
    spec: TrainSpec | None = None,
    model_id: str | None = None,
    progress: bool = True,
) -> TrainResult:
    rows = feature_rows(candles)

    def build(series: CandleSeries) -> tuple[tuple[str, ...], np.ndarray]:
        table = batch_candle_features(series, settings.features)
        return table.names, table.values

    return train_model(
        rows,
        build,
        spec or spec_from_settings(settings.training, settings.strategy),
        out_dir,
        model_id=model_id,
        progress=progress,
    )


async def fetch_history(
    settings: Settings, rest_url: str, pair: str, days: float, *, pause_s: float, progress: bool
) -> Path:
    """Download (or top up) the pair's 1-min candle file and return its path."""
    out = default_output(Path(settings.paths.data_dir), pair)
    async with KrakenPublicRest(rest_url, settings.kraken.request_timeout_s) as rest:
        result = await download_candles(rest, pair, days, out, pause_s=pause_s, progress=progress)
    log.info(
        "history ready",
        extra={
            "pair": pair,
            "path": str(out),
            "candles": result.candles,
            "requests": result.requests,
        },
    )
    return out


async def ensure_demo_model(settings: Settings, rest_url: str) -> Path:
    """A model for the simulator only: trained on its own synthetic history, with the
    acceptance floors off (a synthetic random walk has little to learn), so the offline demo
    runs the whole pipeline. Never used against live Kraken."""
    directory = Path(DEMO_MODEL_DIR)
    if (directory / "model.json").is_file():
        return directory
    pair = settings.pairs[0]
    data_dir = Path(settings.paths.data_dir) / "sim"
    demo = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"data_dir": str(data_dir)})}
    )
    path = await fetch_history(demo, rest_url, pair, days=0.9, pause_s=0.0, progress=False)
    spec = spec_from_settings(settings.training, settings.strategy)
    spec = TrainSpec(
        **{
            **spec.__dict__,
            "min_auc": 0.0,
            "min_brier_skill": None,
            "max_brier": 1.0,
            "rounds": 50,
            "folds": 3,
        }
    )
    result = train_from_candles(
        settings, read_candles(path), directory, spec=spec, model_id="sim-demo", progress=False
    )
    log.warning(
        "trained a demo model on simulator data (not for live trading)",
        extra={"path": str(directory), "mean_auc": round(result.summary["mean_auc"], 4)},
    )
    return directory
