"""PredictionService: model checks, combination, and inference that never blocks the loop."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from gal_friday.bus import EventBus
from gal_friday.events import FeatureEvent, PredictionEvent
from gal_friday.prediction.model import (
    Calibration,
    ModelError,
    ModelMetadata,
    load_booster,
    load_metadata,
    save_model_files,
)
from gal_friday.prediction.pool import InferencePool
from gal_friday.prediction.service import PredictionService, combine, load_models

ENGINE = ("rsi_14", "macd_hist", "spread_pct", "imbalance_5", "roc_5")


NO_CALIBRATION = Calibration()


def train(
    directory: Path,
    model_id: str,
    features: tuple[str, ...],
    *,
    trees: int = 30,
    leaves: int = 15,
    calibration: Calibration = NO_CALIBRATION,
) -> lightgbm.Booster:
    rng = np.random.default_rng(len(model_id))
    x = rng.normal(size=(3000, len(features)))
    y = (x[:, 0] + 0.5 * rng.normal(size=3000) > 0).astype(int)
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1, "num_leaves": leaves, "num_threads": 1},
        lightgbm.Dataset(x, y),
        trees,
    )
    meta = ModelMetadata(
        model_id=model_id,
        feature_names=features,
        label={"threshold_pct": 0.1, "horizon_min": 5},
        calibration=calibration,
    )
    save_model_files(directory, booster.model_to_string(), meta)
    return booster


def test_metadata_round_trips(tmp_path: Path) -> None:
    cal = Calibration((0.0, 0.5, 1.0), (0.1, 0.4, 0.9))
    train(tmp_path / "m", "m1", ENGINE[:3], calibration=cal)
    meta = load_metadata(tmp_path / "m")
    assert meta.feature_names == ENGINE[:3] and meta.calibration == cal


def test_missing_model_points_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="gal-friday train"):
        load_models([tmp_path / "nothing"], None, ENGINE)
    with pytest.raises(ModelError, match="gal-friday train"):
        load_models([], None, ENGINE)


def drop_recorded_digest(directory: Path) -> None:
    """As a model saved before model.json recorded its file's SHA-256."""
    meta = json.loads((directory / "model.json").read_text())
    del meta["model_sha256"]
    (directory / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("recorded", [True, False], ids=["sha256 recorded", "older model"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_model_file_is_refused_naming_it_before_lightgbm_reads_it(
    tmp_path: Path, recorded: bool, keep: float
) -> None:
    """LightGBM aborts or crashes on a truncated file (nothing to catch): it must not see one."""
    train(tmp_path / "m", "m1", ENGINE[:3])
    if not recorded:
        drop_recorded_digest(tmp_path / "m")
    path = tmp_path / "m" / "model.txt"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError) as caught:
        load_models([tmp_path / "m"], None, ENGINE)
    assert str(caught.value).startswith(f"{path} is ")
    assert ("SHA-256" in str(caught.value)) == recorded
    assert "retrain with 'gal-friday train'" in str(caught.value)


def test_an_older_model_that_is_whole_still_loads(tmp_path: Path) -> None:
    train(tmp_path / "m", "m1", ENGINE[:3])
    drop_recorded_digest(tmp_path / "m")
    assert load_metadata(tmp_path / "m").model_sha256 == ""
    assert load_booster(tmp_path / "m").num_trees() == 30


async def test_a_model_lightgbm_refuses_in_a_worker_is_one_model_error(tmp_path: Path) -> None:
    """Whole in structure (so the pre-check passes) but unreadable: the worker reports it, the
    service says it once, and no worker is left running."""
    train(tmp_path / "m", "m1", ENGINE[:3])
    drop_recorded_digest(tmp_path / "m")
    path = tmp_path / "m" / "model.txt"
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in text if not line.startswith("feature_names=")))
    service = PredictionService(EventBus(), load_models([tmp_path / "m"], None, ENGINE))
    with pytest.raises(ModelError, match="cannot be read by LightGBM") as caught:
        await service.start()
    assert str(caught.value).startswith(str(path)) and "feature_names" in str(caught.value)
    assert service._pool is None


def test_model_needing_features_the_engine_lacks_is_refused(tmp_path: Path) -> None:
    train(tmp_path / "m", "m1", ("rsi_14", "vwap_dist_30", "atr_pct_14"))
    with pytest.raises(ModelError) as err:
        load_models([tmp_path / "m"], None, ENGINE)
    assert "vwap_dist_30, atr_pct_14" in str(err.value)


def test_model_features_are_taken_by_name_in_the_models_order(tmp_path: Path) -> None:
    train(tmp_path / "m", "m1", ("roc_5", "rsi_14"))
    (model,) = load_models([tmp_path / "m"], None, ENGINE)
    assert model.positions == (4, 0)


def test_calibration_interpolates_and_clamps() -> None:
    cal = Calibration((0.2, 0.6), (0.1, 0.9))
    assert cal.apply(0.0) == 0.1 and cal.apply(1.0) == 0.9
    assert math.isclose(cal.apply(0.4), 0.5)
    assert Calibration().apply(0.37) == 0.37


def test_combination_weighted_mean_and_vote() -> None:
    assert math.isclose(combine([0.8, 0.2], [3, 1], "mean"), 0.65)
    assert math.isclose(combine([0.8, 0.2, 0.6], [1, 1, 2], "vote"), 0.75)


def feature_event(values: tuple[float, ...], ts: int = 1) -> FeatureEvent:
    return FeatureEvent(pair="XRP/USD", ts_ns=ts, names=ENGINE, values=values)


async def test_service_publishes_combined_calibrated_probabilities(tmp_path: Path) -> None:
    a = train(tmp_path / "a", "a", ENGINE[:3])
    b = train(tmp_path / "b", "b", ("roc_5", "rsi_14"))
    bus = EventBus()
    out: list[PredictionEvent] = []
    bus.subscribe(PredictionEvent, out.append, name="sink")
    service = PredictionService(bus, load_models([tmp_path / "a", tmp_path / "b"], [1, 3], ENGINE))
    bus.start()
    await service.start()
    try:
        rows = np.random.default_rng(1).normal(size=(20, len(ENGINE)))
        for i, row in enumerate(rows):
            await bus.publish(feature_event(tuple(row), ts=i))
        await bus.publish(feature_event((math.nan, 0, 0, 0, 0)))  # warm-up row: no guess
        await bus.drain()
        await bus.drain()
    finally:
        await service.stop()
        await bus.stop()
    assert len(out) == 20 and service.skipped_incomplete == 1
    for row, pred in zip(rows, out, strict=True):
        pa = a.predict(row[[0, 1, 2]].reshape(1, -1))[0]
        pb = b.predict(row[[4, 0]].reshape(1, -1))[0]
        assert math.isclose(pred.prob_up, (pa + 3 * pb) / 4, rel_tol=1e-12)
        assert pred.model_id == "a+b" and pred.latency_ns > 0
    assert [p.features_ts_ns for p in out] == list(range(20))


async def test_inference_never_blocks_the_event_loop(tmp_path: Path) -> None:
    """A burst of feature vectors for a heavy model: predicted on the loop, the burst would
    freeze it for the whole batch (the bus worker does not yield between queued events);
    through the process pool the loop keeps ticking."""
    heavy = train(tmp_path / "h", "heavy", ENGINE, trees=3000, leaves=63)
    burst = 300
    row = np.zeros((1, len(ENGINE)))
    start = time.perf_counter()
    for _ in range(burst):
        heavy.predict(row)
    in_loop_s = time.perf_counter() - start

    bus = EventBus()
    done = asyncio.Event()
    count = 0

    def on_prediction(_: PredictionEvent) -> None:
        nonlocal count
        count += 1
        if count == burst:
            done.set()

    bus.subscribe(PredictionEvent, on_prediction, name="sink")
    service = PredictionService(bus, load_models([tmp_path / "h"], None, ENGINE))
    bus.start()
    await service.start()
    lags: list[float] = []

    async def watch() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.01)
    try:
        for i in range(burst):
            await bus.publish(feature_event((0.1, 0.2, 0.3, 0.4, 0.5), ts=i))
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0.01)  # let the watcher record the tick that spans the end
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await service.stop()
        await bus.stop()
    assert max(lags) < in_loop_s / 4, (max(lags), in_loop_s)


async def test_pool_spreads_requests_and_replaces_a_worker_that_dies(tmp_path: Path) -> None:
    booster = train(tmp_path / "a", "a", ENGINE[:3])
    pool = InferencePool([str(tmp_path / "a")], workers=2)
    await pool.start()
    try:
        rows = np.random.default_rng(2).normal(size=(40, 3))
        results = await asyncio.gather(*(pool.predict([("a", list(r))]) for r in rows))
        expected = booster.predict(rows)
        assert [p[0] for p, _ in results] == pytest.approx(list(expected), rel=1e-12)
        victim = pool._workers[0].process
        victim.kill()
        await asyncio.get_running_loop().run_in_executor(None, victim.join, 5)
        for _ in range(100):  # the loss is noticed, a replacement loads the model
            if len(pool._workers) == 2 and victim not in [w.process for w in pool._workers]:
                break
            await asyncio.sleep(0.1)
        (prob,), _ = await pool.predict([("a", list(rows[0]))])
        assert prob == pytest.approx(expected[0], rel=1e-12)
        assert len(pool._workers) == 2
    finally:
        await pool.stop()


async def test_a_stop_signal_to_the_process_group_leaves_the_workers_to_the_parent(
    tmp_path: Path,
) -> None:
    """Ctrl-C or SIGTERM reach every process of the group; a worker that died of it would
    be replaced in the middle of the shutdown (the replacement then failed as "Task
    exception was never retrieved"). The worker ignores both; the parent's stop ends it."""
    train(tmp_path / "a", "a", ENGINE[:3])
    pool = InferencePool([str(tmp_path / "a")], workers=1)
    await pool.start()
    try:
        worker = pool._workers[0].process
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGTERM)
        os.kill(worker.pid, signal.SIGINT)
        await asyncio.sleep(0.5)
        assert worker.is_alive()
        (prob,), _ = await pool.predict([("a", [0.1, 0.2, 0.3])])
        assert 0 <= prob <= 1
    finally:
        await pool.stop()
    assert not worker.is_alive()
    assert not pool._replacing


def test_a_worker_whose_parent_died_while_it_loaded_ends_quietly(tmp_path: Path) -> None:
    """A SIGKILLed bot leaves its worker loading the models; its "ready" then meets a closed
    pipe. It ends with exit code 0, not a BrokenPipeError traceback on the bot's stderr."""
    import multiprocessing

    from gal_friday.prediction.pool import _serve

    train(tmp_path / "a", "a", ENGINE[:3])
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(target=_serve, args=(child, [str(tmp_path / "a")]))
    process.start()
    child.close()
    parent.close()  # the parent is gone before the worker is ready
    process.join(60)
    assert process.exitcode == 0
