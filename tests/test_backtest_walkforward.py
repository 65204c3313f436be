"""Walk-forward retraining in the backtest (``--retrain-every``): each block's model is trained
only on candles before the block, a rejected block trades nothing, the same inputs give the
same report, and the command runs end to end. Synthetic market, small LightGBM (few rounds)."""

from __future__ import annotations

import argparse
import asyncio
import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gal_friday.backtest import cli as backtest_cli
from gal_friday.backtest.data import PairData, synthetic_pairs
from gal_friday.backtest.runner import run_backtest
from gal_friday.backtest.signals import PairSignals, default_builder, model_signals
from gal_friday.backtest.walkforward import (
    DAY_S,
    Block,
    BlockModel,
    default_trainer,
    make_blocks,
    training_candles,
    walk_forward_signals,
)
from gal_friday.candles import CandleSeries
from gal_friday.config import Settings, load_settings
from gal_friday.events import Side
from gal_friday.prediction.training import ModelRejected, TrainResult

NS = 10**9
# floors off (little to learn in 1-day windows: the skill floor would reject), few rounds, and a
# strategy that trades on the calibrated probabilities these models give
TRAINING = {"rounds": 25, "folds": 2, "min_auc": 0.0, "min_brier_skill": "off"}
STRATEGY = {
    "confirm_momentum": False,
    "min_edge_pct": 0,
    "buy_threshold": 0.56,
    "sell_threshold": 0.45,
}
SETS = [f"training.{k}={v}" for k, v in TRAINING.items()] + [
    f"strategy.{k}={str(v).lower()}" for k, v in STRATEGY.items()
]


def settings(**training: Any) -> Settings:
    return load_settings(
        None, {"pairs": ["XRP/USD"], "training": {**TRAINING, **training}, "strategy": STRATEGY}
    )


def history() -> list[PairData]:
    return synthetic_pairs(["XRP/USD"], seed=11, days=3)  # day 1: history; days 2, 3: blocks


def run_wf(
    s: Settings, data: list[PairData], models_dir: Path, **kwargs: Any
) -> tuple[list[PairData], dict[str, PairSignals], dict[str, Any]]:
    start = int(data[0].candles.time_s[0]) + DAY_S
    return walk_forward_signals(
        s,
        data,
        start_s=start,
        every_days=1,
        window_days=1,
        models_dir=models_dir,
        build=default_builder(s.features),
        **kwargs,
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One walk-forward run, recording the candles every block's model was trained on."""
    s, data = settings(), history()
    seen: list[tuple[str, CandleSeries]] = []
    real = default_trainer(s)

    def recording(candles: CandleSeries, out: Path, model_id: str) -> TrainResult:
        seen.append((model_id, candles))
        return real(candles, out, model_id)

    models_dir = tmp_path_factory.mktemp("wf") / "models"
    period, signals, notes = run_wf(s, data, models_dir, trainer=recording)
    return {
        "settings": s,
        "data": data,
        "period": period,
        "signals": signals,
        "notes": notes,
        "seen": seen,
        "models_dir": models_dir,
    }


# --- no look-ahead -------------------------------------------------------------------------


def test_blocks_cover_the_period_and_the_training_windows_end_before_each_block(
    clean: dict[str, Any],
) -> None:
    wf = clean["notes"]["walk_forward"]
    data, period = clean["data"], clean["period"]
    start = int(data[0].candles.time_s[0]) + DAY_S
    blocks = wf["blocks"]
    assert [b["status"] for b in blocks] == ["trained", "trained"]
    assert blocks[0]["train_window"]["end_s"] == start
    assert blocks[1]["train_window"]["end_s"] == start + DAY_S
    assert int(period[0].candles.time_s[0]) == start  # history is not traded
    horizon_s = clean["settings"].training.horizon_min * 60
    for block, (model_id, candles) in zip(blocks, clean["seen"], strict=True):
        block_start = block["train_window"]["end_s"]
        assert model_id == block["model_id"]
        # every candle the model saw had closed by the block's start
        assert int(candles.time_s[-1]) + 60 <= block_start
        assert int(candles.time_s[0]) >= block["train_window"]["start_s"] == block_start - DAY_S
        # the last labelled row's horizon ends inside the window, not in the block
        window = block["data_window"]
        assert window["end_s"] + horizon_s <= int(candles.time_s[-1]) < block_start
        saved = json.loads((clean["models_dir"] / model_id / "model.json").read_text())
        assert saved["data_window"]["end_s"] == window["end_s"]
        assert 0.0 <= block["mean_auc"] <= 1.0


def test_training_window_slice_is_strictly_before_the_block() -> None:
    candles = history()[0].candles
    t0 = int(candles.time_s[0])
    window = training_candles(candles, t0 + 600, 300)
    assert window.time_s.tolist() == [t0 + 300 + 60 * k for k in range(5)]
    assert make_blocks(0, 5 * DAY_S, 2 * DAY_S) == [
        Block(0, 0, 2 * DAY_S),
        Block(1, 2 * DAY_S, 4 * DAY_S),
        Block(2, 4 * DAY_S, 5 * DAY_S),
    ]


def test_a_tampered_candle_after_a_block_start_does_not_change_that_blocks_model(
    clean: dict[str, Any], tmp_path: Path
) -> None:
    data = clean["data"][0]
    c = data.candles
    start = int(c.time_s[0]) + DAY_S
    lo = int(np.searchsorted(c.time_s, start + 600))  # 10 minutes into block 0 ...
    hi = lo + 120  # ... for two hours: prices 30 % up
    scale = np.ones(len(c))
    scale[lo:hi] = 1.3
    tampered = CandleSeries(
        c.time_s, c.open * scale, c.high * scale, c.low * scale, c.close * scale, c.volume, c.trades
    )
    _, signals, notes = run_wf(
        clean["settings"], [PairData(data.pair, tampered, data.instrument, 60)], tmp_path / "models"
    )
    ids = [b["model_id"] for b in notes["walk_forward"]["blocks"]]
    before, after = clean["models_dir"], tmp_path / "models"
    assert (after / ids[0] / "model.txt").read_text() == (before / ids[0] / "model.txt").read_text()
    assert notes["walk_forward"]["blocks"][0] == clean["notes"]["walk_forward"]["blocks"][0]
    # block 0's probabilities up to the tampered candle are the same
    first = lo - int(np.searchsorted(c.time_s, start))
    p_clean, p_tampered = clean["signals"][data.pair].prob, signals[data.pair].prob
    np.testing.assert_array_equal(p_tampered[:first], p_clean[:first])
    # the tampered candles are in block 1's training window: its model did change
    assert (after / ids[1] / "model.txt").read_text() != (before / ids[1] / "model.txt").read_text()


def test_block_probabilities_are_the_block_models_calibrated_like_live(
    clean: dict[str, Any],
) -> None:
    from gal_friday.features import candle_feature_names
    from gal_friday.prediction.service import load_models

    s, data = clean["settings"], clean["data"][0]
    block = clean["notes"]["walk_forward"]["blocks"][0]
    models = load_models(
        [clean["models_dir"] / block["model_id"]], None, candle_feature_names(s.features)
    )
    full = model_signals(data.candles, models, s.prediction.combine, default_builder(s.features))
    lo = int(np.searchsorted(data.candles.time_s, block["train_window"]["end_s"]))
    n = int(np.searchsorted(data.candles.time_s, block["train_window"]["end_s"] + DAY_S)) - lo
    prob = clean["signals"][data.pair].prob
    np.testing.assert_array_equal(prob[:n], full.prob[lo : lo + n])
    assert not np.isnan(prob).any()  # features are warm: history came before the period


# --- rejected blocks -------------------------------------------------------------------------


def test_a_rejected_block_trades_nothing(clean: dict[str, Any], tmp_path: Path) -> None:
    s = clean["settings"]
    real = default_trainer(s)

    def reject_second(candles: CandleSeries, out: Path, model_id: str) -> TrainResult:
        if model_id.startswith("wf-01"):
            raise ModelRejected("model rejected: mean AUC 0.5000 is below the floor 0.52")
        return real(candles, out, model_id)

    period, signals, notes = run_wf(s, clean["data"], tmp_path / "models", trainer=reject_second)
    wf = notes["walk_forward"]
    assert wf["rejected_blocks"] == [1]
    second = wf["blocks"][1]
    assert second["status"] == "rejected" and second["model_id"] is None
    assert "below the floor" in second["reason"]
    start_1 = int(period[0].candles.time_s[0]) + DAY_S
    split = int(np.searchsorted(period[0].candles.time_s, start_1))
    prob = signals["XRP/USD"].prob
    assert np.isnan(prob[split:]).all() and not np.isnan(prob[:split]).any()
    assert not (tmp_path / "models" / "wf-01").exists()
    result = asyncio.run(run_backtest(s, period, signals, capital=D(10000)))
    buys = [f.ts_ns for f in result.fills if f.side is Side.BUY]
    assert buys, "block 0 should trade"  # so the check below is not vacuous
    assert max(buys) < (start_1 + 120) * NS  # no entry from block 1's (absent) signals


def test_blocks_the_floors_reject_trade_nothing(tmp_path: Path) -> None:
    s = settings(min_auc=1.0, folds=2)
    period, signals, notes = run_wf(s, history(), tmp_path / "models")
    blocks = notes["walk_forward"]["blocks"]
    assert [b["status"] for b in blocks] == ["rejected", "rejected"]
    assert all("below the floor" in b["reason"] for b in blocks)
    assert np.isnan(signals["XRP/USD"].prob).all()
    result = asyncio.run(run_backtest(s, period, signals, capital=D(10000)))
    assert result.fills == [] and result.stats.get("orders", 0) == 0


def test_block_model_report_entry_of_a_rejected_block() -> None:
    entry = BlockModel(Block(2, 2 * DAY_S, 3 * DAY_S), DAY_S, 1440, "wf-02", reason="why")
    doc = entry.describe()
    assert doc["status"] == "rejected" and doc["reason"] == "why" and "mean_auc" not in doc
    assert doc["train_window"]["end"] == "1970-01-03T00:00:00Z"


# --- the configured model's data window (default path) --------------------------------------


def test_the_configured_models_window_against_the_period() -> None:
    describe = backtest_cli.describe_model_window
    assert describe("m", {"start_s": 0, "end_s": 99}, 100, 200)["relation"] == "before"
    assert describe("m", {"start_s": 0, "end_s": 100}, 100, 200)["relation"] == "overlaps"
    assert describe("m", {"start_s": 150, "end_s": 300}, 100, 200)["relation"] == "overlaps"
    assert describe("m", {"start_s": 201, "end_s": 300}, 100, 200)["relation"] == "after"
    assert describe("m", {}, 100, 200)["relation"] == "overlaps"
    # the last labelled row's horizon reaches into the period: in-sample
    assert describe("m", {"start_s": 0, "end_s": 90}, 100, 200, horizon_s=10)["relation"] == (
        "overlaps"
    )
    assert describe("m", {"start_s": 0, "end_s": 89}, 100, 200, horizon_s=10)["relation"] == (
        "before"
    )


# --- the command ---------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    from gal_friday.cli import _common_options

    parser = argparse.ArgumentParser()
    backtest_cli.add_parser(parser.add_subparsers(dest="command"), _common_options())
    return parser.parse_args(["backtest", *argv])


def command(*argv: str) -> int:
    from gal_friday.cli import settings_from_args

    args = parse(
        *argv,
        "--pairs",
        "XRP/USD",
        "--no-progress",
        "--no-chart",
        *(x for item in SETS for x in ("--set", item)),
    )
    return asyncio.run(backtest_cli.run(settings_from_args(args), args))


def test_the_command_end_to_end_and_deterministic(
    tmp_path: Path, in_tmp: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--synthetic", "6", "--retrain-every", "2", "--train-window", "3")
    assert command(*argv, "--out", str(tmp_path / "a")) == 0
    printed = capsys.readouterr().out
    assert "block 1/2" in printed and "block 2/2" in printed and "mean AUC" in printed
    assert command(*argv, "--out", str(tmp_path / "b")) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("metrics.json", "trades.csv", "equity.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    doc = json.loads((a / "metrics.json").read_text())
    wf = doc["walk_forward"]
    assert doc["strategy"] == "model-walk-forward" and doc["metrics"]["trades"] > 0
    assert (wf["retrain_every_days"], wf["train_window_days"]) == (2, 3)
    assert [(x["start"], x["end"]) for x in wf["blocks"]] == [
        ("2025-12-29T00:00:00Z", "2025-12-31T00:00:00Z"),
        ("2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"),
    ]
    assert doc["start"].startswith("2025-12-29T00:00")  # the first 3 days are history only
    for x in wf["blocks"]:
        assert x["train_window"]["end_s"] - x["train_window"]["start_s"] == 3 * DAY_S
        assert x["data_window"]["end_s"] < x["train_window"]["end_s"]
        model = a / x["model_dir"]
        assert (model / "model.txt").read_text() == (b / x["model_dir"] / "model.txt").read_text()
        assert json.loads((model / "model.json").read_text())["model_id"] == x["model_id"]


def test_the_command_refuses_bad_walk_forward_options(tmp_path: Path, in_tmp: Any) -> None:
    out = ("--out", str(tmp_path / "r"))
    assert command("--synthetic", "1", "--retrain-every", "1", "--strategy", "sma", *out) == 2
    assert command("--synthetic", "1", "--train-window", "1", *out) == 2
    assert command("--synthetic", "1", "--retrain-every", "0", *out) == 2
    assert command("--synthetic", "1", "--retrain-every", "1", "--train-window", "2", *out) == 2
    assert not (tmp_path / "r").exists()


def test_the_default_train_window_is_the_training_history() -> None:
    s = load_settings(None, {"training": {"history_days": 30}})
    assert backtest_cli.train_window_days(s, parse("--retrain-every", "7")) == 30.0
    assert (
        backtest_cli.train_window_days(s, parse("--retrain-every", "7", "--train-window", "5"))
        == 5.0
    )
