"""The ``gal-friday backtest`` command's options, apart from its run (``backtest.cli``).

Kept free of the engine's imports (numpy, scipy, LightGBM) so that building the main parser,
which every command does, stays fast: the run imports those only when it starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any, common_parent: argparse.ArgumentParser) -> None:
    """Register ``backtest`` on the main parser's subcommands."""
    bt = subparsers.add_parser(
        "backtest",
        parents=[common_parent],
        help="replay history through the trading modules and report",
    )
    bt.add_argument("--start", metavar="DATE", help="first candle, UTC (YYYY-MM-DD[THH:MM])")
    bt.add_argument("--end", metavar="DATE", help="end (exclusive), UTC")
    bt.add_argument(
        "--capital", metavar="USD", help="initial capital (default: backtest.initial_capital_usd)"
    )
    bt.add_argument(
        "--candles",
        action="append",
        default=[],
        metavar="[PAIR=]FILE",
        help="OHLCVT candle file, repeatable (default: the download's files)",
    )
    bt.add_argument(
        "--recording",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="replay a recording from 'gal-friday record' (L2 books, trades, "
        "candles) event by event; repeatable",
    )
    bt.add_argument(
        "--synthetic",
        type=float,
        metavar="DAYS",
        help="use DAYS of the simulator's synthetic market instead of files",
    )
    bt.add_argument("--seed", type=int, help="seed of the synthetic market (default 7)")
    bt.add_argument("--strategy", choices=["model", "sma"], default="model")
    bt.add_argument(
        "--sma", default="10,30", metavar="FAST,SLOW", help="periods of the sma strategy"
    )
    bt.add_argument(
        "--depth",
        choices=["volume", "unlimited"],
        help="liquidity at each intrabar price: a share of the candle's volume "
        "(default), or unlimited",
    )
    bt.add_argument(
        "--retrain-every",
        type=float,
        metavar="DAYS",
        help="walk-forward: retrain the model every DAYS, each block's model "
        "trained only on candles before the block (strategy model only)",
    )
    bt.add_argument(
        "--train-window",
        type=float,
        metavar="DAYS",
        help="walk-forward: days of candles each block's model is trained on "
        "(default: training.history_days)",
    )
    bt.add_argument(
        "--baseline-seeds",
        metavar="N",
        help="random-entry runs with the strategy's exits to compare it with "
        "(default: backtest.baseline_seeds; 0: none)",
    )
    bt.add_argument("--out", type=Path, metavar="DIR", help="report directory")
    bt.add_argument("--no-progress", action="store_true")
    bt.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
