"""``gal-friday backtest``: the command's options and its run.

Examples::

    gal-friday backtest --pairs XRP/USD,DOGE/USD --start 2025-01-01 --end 2025-07-01 \\
        --capital 10000
    gal-friday backtest --candles XRP/USD=data/XRPUSD_1.csv --strategy sma
    gal-friday backtest --synthetic 30            # offline: the simulator's market

The strategy is the configured model (``prediction.models``) through the StrategyArbitrator,
or ``sma``: a classic SMA crossover traded at market. Results go to
``backtest.report_dir/<UTC time>/`` unless ``--out`` names a directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gal_friday.backtest.classic import MarketStrategy
from gal_friday.backtest.data import PairData, candle_files, load_pairs, synthetic_pairs
from gal_friday.backtest.engine import StrategyFactory, default_strategy
from gal_friday.backtest.signals import (
    PairSignals,
    check_candle_models,
    default_builder,
    model_signals,
    sma_cross_signals,
)
from gal_friday.config import Settings
from gal_friday.features import candle_feature_names
from gal_friday.prediction.model import ModelError
from gal_friday.prediction.service import load_models

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Register ``backtest`` on the main parser's subcommands."""
    bt = subparsers.add_parser("backtest", parents=[common_parent],
                               help="replay history through the trading modules and report")
    bt.add_argument("--start", metavar="DATE", help="first candle, UTC (YYYY-MM-DD[THH:MM])")
    bt.add_argument("--end", metavar="DATE", help="end (exclusive), UTC")
    bt.add_argument("--capital", metavar="USD", help="initial capital "
                    "(default: backtest.initial_capital_usd)")
    bt.add_argument("--candles", action="append", default=[], metavar="[PAIR=]FILE",
                    help="OHLCVT candle file, repeatable (default: the download's files)")
    bt.add_argument("--synthetic", type=float, metavar="DAYS",
                    help="use DAYS of the simulator's synthetic market instead of files")
    bt.add_argument("--seed", type=int, default=7, help="seed of the synthetic market")
    bt.add_argument("--strategy", choices=["model", "sma"], default="model")
    bt.add_argument("--sma", default="10,30", metavar="FAST,SLOW",
                    help="periods of the sma strategy")
    bt.add_argument("--depth", choices=["volume", "unlimited"], default="volume",
                    help="liquidity at each intrabar price: a share of the candle's volume, "
                         "or unlimited")
    bt.add_argument("--out", type=Path, metavar="DIR", help="report directory")
    bt.add_argument("--no-progress", action="store_true")
    bt.add_argument("--no-chart", action="store_true", help="skip the PNG chart")


class BacktestUsageError(ValueError):
    """A bad option value; the message is one line for the user."""


def parse_time(text: str | None) -> int | None:
    """UTC date or date-time text as unix seconds."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BacktestUsageError(f"not a date: {text!r} (use YYYY-MM-DD or "
                                 "YYYY-MM-DDTHH:MM)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def load_data(settings: Settings, args: argparse.Namespace) -> list[PairData]:
    if args.synthetic:
        return synthetic_pairs(settings.pairs, seed=args.seed, days=args.synthetic)
    files = candle_files(settings.pairs, args.candles, Path(settings.paths.data_dir))
    return load_pairs(files, start_s=parse_time(args.start), end_s=parse_time(args.end))


def build_signals(settings: Settings, data: list[PairData], args: argparse.Namespace
                  ) -> tuple[dict[str, PairSignals], StrategyFactory, dict[str, Any]]:
    """Signals per pair, the strategy that trades them, and notes for the report."""
    if args.strategy == "sma":
        fast, _, slow = args.sma.partition(",")
        try:
            periods = int(fast), int(slow)
        except ValueError:
            raise BacktestUsageError(f"--sma needs FAST,SLOW, got {args.sma!r}") from None

        def market(s: Settings, bus: Any) -> MarketStrategy:
            return MarketStrategy(s.strategy, s.fees, bus,
                                  venue_brackets=s.execution.protective_orders)

        return ({d.pair: sma_cross_signals(d.candles, *periods) for d in data}, market,
                {"strategy": f"sma-{periods[0]}-{periods[1]}"})
    cfg = settings.prediction
    models = load_models([Path(m) for m in cfg.models], cfg.weights or None,
                         candle_feature_names(settings.features))
    check_candle_models(models, settings.features)
    build = default_builder(settings.features)
    signals = {d.pair: model_signals(d.candles, models, cfg.combine, build) for d in data}
    first = min(int(d.candles.time_s[0]) for d in data)
    in_sample = [m.meta.model_id for m in models
                 if int(m.meta.data_window.get("end_s", 0) or 0) > first]
    return signals, default_strategy, {"strategy": "model", "models_in_sample": in_sample}


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the backtest, print the summary and write the report; the exit code."""
    from rich.console import Console

    from gal_friday.backtest.report import summary_table, terminal_chart, write_report
    from gal_friday.backtest.runner import run_backtest

    console = Console()
    try:
        capital = Decimal(args.capital or settings.backtest.initial_capital_usd)
        data = load_data(settings, args)
        signals, strategy, notes = build_signals(settings, data, args)
    except (BacktestUsageError, InvalidOperation) as exc:
        console.print(f"gal-friday: {exc}", style="red")
        return EXIT_USAGE
    except ModelError as exc:
        console.print(f"gal-friday: {exc}", style="red")
        return EXIT_FAILURE
    if notes.get("models_in_sample"):
        console.print("warning: the model was trained on data overlapping this backtest; "
                      "its results are in-sample", style="yellow")
    quiet = logging.getLogger("gal_friday")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # per-order logs (and rejections) would dominate the run
    try:
        result = await _run_with_progress(settings, data, signals, strategy, capital, args,
                                          run_backtest)
    finally:
        quiet.setLevel(level)
    out = args.out or Path(settings.backtest.report_dir) / datetime.now(UTC).strftime(
        "backtest-%Y%m%dT%H%M%SZ")
    paths = await asyncio.to_thread(write_report, result, out, chart=not args.no_chart,
                                    extra=notes)
    console.print(summary_table(result))
    console.print(terminal_chart(result.equity))
    candles = result.stats["candles"]
    console.print(f"{candles:,} candles in {result.stats['loop_seconds']:.2f} s; report in "
                  f"{', '.join(str(p) for p in paths.values())}")
    return EXIT_OK


async def _run_with_progress(settings: Settings, data: list[PairData],
                             signals: dict[str, PairSignals], strategy: StrategyFactory,
                             capital: Decimal, args: argparse.Namespace, runner: Any) -> Any:
    if args.no_progress:
        return await runner(settings, data, signals, capital=capital, strategy=strategy,
                            depth=args.depth)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("backtest", total=1)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return await runner(settings, data, signals, capital=capital, strategy=strategy,
                            depth=args.depth, progress=progress)
