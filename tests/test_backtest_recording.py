"""``gal-friday backtest --recording``: the event-driven backtest on recorded L2 data.

Recordings are made here from the simulator's market on a simulated clock
(``tests/simrecording.py``, the ``gal-friday record`` file format), so half an hour of L2
market takes a second. Fills are checked against the recorded books and trades, fees against
the configured rates; a corrupted checksum stops trading on the invalid book."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
from dataclasses import replace
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from simrecording import write_sim_recording

from gal_friday.backtest import cli as backtest_cli
from gal_friday.backtest.data import synthetic_pairs
from gal_friday.backtest.engine import Fill
from gal_friday.backtest.recording import (
    ModelPredictor,
    RecordingBacktest,
    RecordingRun,
    SmaCross,
    SmaPredictor,
    run_recording_backtest,
)
from gal_friday.backtest.report import write_report
from gal_friday.backtest.signals import sma_cross_signals
from gal_friday.candles import CandleSeries
from gal_friday.cli import _common_options, settings_from_args
from gal_friday.config import Settings, load_settings
from gal_friday.events import BookEvent, FeatureEvent, OrderType, Side, TradeEvent
from gal_friday.features import feature_names
from gal_friday.kraken.public import PublicStreamDecoder
from gal_friday.kraken.recorder import RecordingError, read_recording
from gal_friday.prediction.pipeline import train_from_candles
from gal_friday.prediction.service import load_models
from gal_friday.prediction.training import TrainSpec

PAIRS = ("XRP/USD", "DOGE/USD")
SMA = (3, 8)


def settings(**sections: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "pairs": list(PAIRS),
        "strategy": {"confirm_momentum": False, "min_edge_pct": 0, "max_holding_min": 10},
        "paper": {"latency_ms": 50, "slippage_bps": 2},
        "fees": {"maker_pct": "0.25", "taker_pct": "0.40"},
        "risk": {
            "max_consecutive_losses": 1000,
            "max_daily_drawdown_pct": 100,
            "max_weekly_drawdown_pct": 100,
            "max_total_drawdown_pct": 100,
        },
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return load_settings(None, base)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "sim.jsonl.gz"
    write_sim_recording(path, pairs=PAIRS, seed=11, minutes=30, rate=4)
    return path


def run_sma(s: Settings, paths: list[Path]) -> tuple[RecordingBacktest, RecordingRun]:
    from gal_friday.backtest.classic import MarketStrategy

    def strat(st: Settings, bus: Any) -> MarketStrategy:
        return MarketStrategy(
            st.strategy, st.fees, bus, venue_brackets=st.execution.protective_orders
        )

    bt = RecordingBacktest(s, paths, capital=D(10000), predictor=SmaPredictor(*SMA), strategy=strat)
    return bt, asyncio.run(bt.run())


# --- what the recording held -----------------------------------------------------------------


class Market:
    """The recording decoded again independently: per pair, the verified books and the trades
    with their receive times."""

    def __init__(self, path: Path) -> None:
        header, frames = read_recording(path)
        now = [0]
        decoder = PublicStreamDecoder(header["pairs"], header["depth"], clock=lambda: now[0])
        self.books: dict[str, list[BookEvent]] = {p: [] for p in header["pairs"]}
        self.trades: dict[str, list[TradeEvent]] = {p: [] for p in header["pairs"]}
        for t, raw in frames:
            now[0] = t
            for e in decoder.feed(raw):
                if isinstance(e, BookEvent):
                    self.books[e.pair].append(e)
                elif isinstance(e, TradeEvent):
                    self.trades[e.pair].append(e)
        self.book_ts = {p: [b.received_ts_ns for b in v] for p, v in self.books.items()}

    def book_at(self, pair: str, ts: int) -> BookEvent:
        """The last verified book received at or before ``ts``."""
        i = bisect.bisect_right(self.book_ts[pair], ts) - 1
        assert i >= 0, f"a fill at {ts} before any book of {pair}"
        return self.books[pair][i]

    def trades_at(self, pair: str, ts: int) -> list[TradeEvent]:
        return [t for t in self.trades[pair] if t.received_ts_ns == ts]


def check_fill(fill: Fill, market: Market, s: Settings) -> str:
    """Assert the fill is what the recorded market allowed; returns 'maker' or 'taker'."""
    slip = s.paper.slippage_bps / D(10000)
    book = market.book_at(fill.pair, fill.ts_ns)
    bids, asks = book.decimal_levels()
    buy = fill.side is Side.BUY
    taker_prices = {p * (1 + slip) for p, _ in asks} if buy else {p * (1 - slip) for p, _ in bids}
    notional = fill.qty * fill.price
    if fill.order_type is not OrderType.LIMIT:  # market, stop-loss, take-profit: a depth walk
        assert fill.price in taker_prices, (fill, asks[:3] if buy else bids[:3])
        assert fill.fee == notional * s.fees.taker_pct / 100
        return "taker"
    # a limit fills only when a trade or the opposite best price touches or crosses it
    trades = market.trades_at(fill.pair, fill.ts_ns)
    if buy:
        touched = any(t.price <= fill.price for t in trades) or asks[0][0] <= fill.price
    else:
        touched = any(t.price >= fill.price for t in trades) or bids[0][0] >= fill.price
    assert touched, fill
    if fill.fee == notional * s.fees.maker_pct / 100:
        return "maker"
    assert fill.fee == notional * s.fees.taker_pct / 100
    return "taker"


# --- tests -----------------------------------------------------------------------------------


def test_incremental_sma_cross_equals_the_batch_signals() -> None:
    rng = np.random.default_rng(3)
    close = np.round(2.0 + np.cumsum(rng.normal(0, 0.002, 400)), 4)
    close[100:110] = close[99]  # flat stretch: zero differences carry the last sign
    n = len(close)
    series = CandleSeries(
        np.arange(n, dtype=np.int64) * 60,
        close,
        close,
        close,
        close,
        np.ones(n),
        np.ones(n, dtype=np.int64),
    )
    batch = sma_cross_signals(series, 5, 20).prob
    cross = SmaCross(5, 20)
    live = np.array([cross.push(float(c)) for c in close])
    assert np.array_equal(np.isnan(batch), np.isnan(live))
    assert np.array_equal(batch[~np.isnan(batch)], live[~np.isnan(live)])
    assert (~np.isnan(batch)).sum() > 5


def test_sma_on_a_recording_fills_only_against_the_recorded_market(recording: Path) -> None:
    s = settings()
    bt, out = run_sma(s, [recording])
    assert out.stats["checksum_failures"] == 0
    assert out.stats["decisions"] >= 2 and out.stats["orders"] >= 2
    assert out.fills, out.stats
    market = Market(recording)
    kinds = {check_fill(f, market, s) for f in out.fills}
    assert kinds == {"taker"}  # the sma strategy trades at market
    assert any(f.side is Side.BUY for f in out.fills)
    # latency: no fill before the order could reach the venue
    first_approval = min(t for t, *_ in out.approvals)
    assert min(f.ts_ns for f in out.fills) >= first_approval + 50_000_000
    # the portfolio's cash is the fills' arithmetic
    snap = bt.portfolio.snapshot()
    cash = D(10000) + sum(
        (-f.qty * f.price if f.side is Side.BUY else f.qty * f.price) - f.fee for f in out.fills
    )
    assert snap.cash == cash
    assert snap.fees_paid == sum(f.fee for f in out.fills)


def test_model_strategy_on_a_recording_uses_live_features_and_limit_fills(
    recording: Path, tmp_path: Path
) -> None:
    """A model trained quickly on the simulator's history; thresholds low so it trades. Its
    limit entries join the bid and fill only when the recorded market reaches them."""
    s = settings(
        strategy={"buy_threshold": 0.51, "sell_threshold": 0.49}, execution={"entry_timeout_s": 30}
    )
    history = synthetic_pairs(["XRP/USD"], seed=11, days=1)[0].candles
    spec = replace(TrainSpec(), min_auc=0.0, min_brier_skill=None, rounds=20, folds=2)
    train_from_candles(s, history, tmp_path / "m", spec=spec, model_id="test-model", progress=False)
    models = load_models([tmp_path / "m"], None, feature_names(s.features))
    predictor = ModelPredictor(models, "mean")
    bt = RecordingBacktest(s, [recording], capital=D(10000), predictor=predictor)
    vectors: list[FeatureEvent] = []
    bt.bus.subscribe(FeatureEvent, vectors.append, name="test")
    out = asyncio.run(bt.run())
    # the live feature engine published full vectors, book and trade-flow features included
    spread = vectors[0].names.index("book_spread")
    assert vectors[-1].names == feature_names(s.features)
    assert all(math.isfinite(v.values[spread]) and v.values[spread] > 0 for v in vectors)
    assert all(not any(math.isnan(x) for x in v.values) for v in vectors[-10:])
    assert out.stats["features"] >= 50 and out.stats["decisions"] >= 10
    assert out.stats["orders"] >= 1, out.stats
    market = Market(recording)
    kinds = [check_fill(f, market, s) for f in out.fills]
    assert "maker" in kinds and "taker" in kinds  # limit entries rest; exits at market


def test_same_recording_gives_the_same_report(recording: Path, tmp_path: Path) -> None:
    s = settings()
    texts = []
    for name in ("a", "b"):
        result = asyncio.run(
            run_recording_backtest(
                s,
                [recording],
                capital=D(10000),
                predictor=SmaPredictor(*SMA),
                strategy=backtest_cli.market_strategy,
            )
        )
        paths = write_report(result, tmp_path / name, chart=False, extra={"x": 1})
        texts.append("".join(paths[k].read_text() for k in ("trades", "equity", "metrics")))
        assert result.fills
    assert texts[0] == texts[1]


def test_a_corrupted_checksum_stops_trading_on_the_invalid_book(
    recording: Path, tmp_path: Path
) -> None:
    """Corrupt the book update just before the first entry's decision: the book is discarded
    (BookInvalidatedEvent), the prediction at that candle finds no market price, and no order
    is sent until a fresh snapshot."""
    s = settings()
    _, clean = run_sma(s, [recording])
    t_entry, pair, _, valid = clean.approvals[0]
    assert valid
    market = Market(recording)
    # the pair's book updates before the decision (its first book is the snapshot)
    n = sum(1 for b in market.books[pair][1:] if b.received_ts_ns < t_entry - 500_000_000)
    bad = tmp_path / "bad.jsonl.gz"
    write_sim_recording(
        bad, pairs=PAIRS, seed=11, minutes=30, rate=4, corrupt=[(pair, n)], resnapshot_s=3.0
    )
    _, out = run_sma(s, [bad])
    assert out.stats["checksum_failures"] == 1
    assert out.stats["predictions_on_invalid_book"] >= 1
    assert out.stats["approved_on_invalid_book"] == 0
    assert all(valid for *_, valid in out.approvals)
    assert out.stats["signals_rejected"] >= 1  # the entry found no market price
    assert not any(abs(t - t_entry) < 10**9 and p == pair for t, p, *_ in out.approvals)
    # the fills that did happen still came from the recorded (valid) books
    bad_market = Market(bad)
    for fill in out.fills:
        check_fill(fill, bad_market, s)


def test_the_command_on_recordings(recording: Path, tmp_path: Path, in_tmp: Any) -> None:
    parser = argparse.ArgumentParser()
    backtest_cli.add_parser(parser.add_subparsers(dest="command"), _common_options())
    args = parser.parse_args(
        [
            "backtest",
            "--recording",
            str(recording),
            "--strategy",
            "sma",
            "--sma",
            f"{SMA[0]},{SMA[1]}",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 0
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert names == ["equity.csv", "equity.png", "metrics.json", "trades.csv"]
    bad = parser.parse_args(["backtest", "--recording", str(recording), "--synthetic", "1"])
    assert asyncio.run(backtest_cli.run(settings_from_args(bad), bad)) == 2
    missing = parser.parse_args(
        [
            "backtest",
            "--recording",
            str(tmp_path / "nope.gz"),
            "--strategy",
            "sma",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(missing), missing)) == 1


def test_damaged_and_empty_recordings(recording: Path, tmp_path: Path) -> None:
    import gzip
    import json

    with gzip.open(recording, "rt") as fh:
        lines = fh.read().splitlines(keepends=True)
    s = settings()
    _, clean = run_sma(s, [recording])
    # damaged lines inside the file are skipped and counted; the rest of the file still runs
    damaged = tmp_path / "damaged.jsonl.gz"
    with gzip.open(damaged, "wt") as fh:
        fh.writelines(
            [*lines[:3000], '{"t": 1, "raw"\n', "[1, 2]\n", '{"t": null}\n', *lines[3000:]]
        )
    _, out = run_sma(s, [damaged])
    assert out.stats["unreadable_lines"] == 3 and out.stats["truncated_files"] == 0
    assert out.stats["frames"] == clean.stats["frames"]
    # a file with only its header (a recorder stopped before any data) adds nothing
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt") as fh:
        fh.write(lines[0])
    _, both = run_sma(s, [recording, empty])
    assert both.stats["frames"] == clean.stats["frames"] and both.fills == clean.fills
    # a damaged header is one clear error
    header = json.loads(lines[0])
    for field, value in (("depth", "ten"), ("pairs", "XRP/USD")):
        bad = tmp_path / f"bad-{field}.jsonl.gz"
        with gzip.open(bad, "wt") as fh:
            fh.writelines([json.dumps({**header, field: value}) + "\n", *lines[1:50]])
        with pytest.raises(RecordingError, match="damaged header"):
            run_sma(s, [bad])


@pytest.mark.parametrize(
    "option",
    [["--synthetic", "0"], ["--retrain-every", "0"], ["--depth", "unlimited"], ["--seed", "3"]],
)
def test_options_that_do_not_apply_to_recordings_are_refused(
    recording: Path, tmp_path: Path, in_tmp: Any, option: list[str]
) -> None:
    parser = argparse.ArgumentParser()
    backtest_cli.add_parser(parser.add_subparsers(dest="command"), _common_options())
    args = parser.parse_args(
        [
            "backtest",
            "--recording",
            str(recording),
            "--strategy",
            "sma",
            "--out",
            str(tmp_path / "r"),
            *option,
        ]
    )
    assert asyncio.run(backtest_cli.run(settings_from_args(args), args)) == 2
    assert not (tmp_path / "r").exists()
