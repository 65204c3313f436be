"""``gal-friday backtest``: the command's options and its run.

Examples::

    gal-friday backtest --pairs XRP/USD,DOGE/USD --start 2025-01-01 --end 2025-07-01 \\
        --capital 10000
    gal-friday backtest --candles XRP/USD=data/XRPUSD_1.csv --strategy sma
    gal-friday backtest --synthetic 30            # offline: the simulator's market
    gal-friday backtest --recording rec.jsonl.gz  # the recorded L2 market, event by event

    gal-friday backtest --synthetic 30 --retrain-every 7 --train-window 14
    gal-friday backtest --start 2025-03-01 --end 2025-07-01 --retrain-every 14

The strategy is the configured model (``prediction.models``) through the StrategyArbitrator,
or ``sma``: a classic SMA crossover traded at market. Results go to
``backtest.report_dir/<UTC time>/`` unless ``--out`` names a directory.

Which model trades when. By default the configured model trades the whole period: that is the
model "as of" each point in time only if it was trained on data before the period. Its
``model.json`` records its training data window; when that window ends after the period's
first candle (it overlaps the period, or lies after it) the run warns that the results are
in-sample, and ``metrics.json`` lists each model's data window and how it relates to the
period (``models``: ``before`` / ``overlaps`` / ``after``; ``models_in_sample``: the ids of
the last two).

Warm-up. The indicators are warmed on every candle of the file before ``--start``, as the
live bot warms them from REST OHLC: RSI, MACD and ATR are recursive and forget where the
series began only after ``features.convergence_rows`` rows (210 with the defaults; a run
begun 34 rows before ``--start`` had RSI points off and MACD histograms of the wrong sign for
its first ~250 rows). ``--start`` before a pair's first candle, or fewer rows before it than
``features.warmup_rows`` (33; the slow window for ``sma``), is a usage error (exit 2); fewer
than ``convergence_rows`` runs, and the console and ``metrics.json`` (``warmup``) say how many
rows each pair was missing. Without ``--start`` (and with ``--synthetic``) the data's first
``convergence_rows`` rows are history only and the period starts after them.

``--recording FILE`` (repeatable) replays files written by ``gal-friday record`` event by
event instead of candles: recorded books (checksums verified), trades and candles on the
recorded receive times, through the live feature engine (book and trade-flow features too),
the configured models (or ``--strategy sma`` on the recorded 1-minute candles) and the same
trading modules; fills come from the recorded books and trades (``backtest.recording``).

``--retrain-every DAYS`` retrains instead (``backtest.walkforward``): the period is cut into
blocks of DAYS and each block is traded by a model trained, with ``gal-friday train``'s spec
(``[training]``), only on the first pair's candles of the ``--train-window`` days before the
block (default ``training.history_days``, 90). With candle files the history before
``--start`` is read for the first window; without ``--start`` (and with ``--synthetic``) the
first window of the data is history only and the period starts after it. A block whose
model the training floors reject trades nothing. Block models are saved in
``<report>/models/`` and ``metrics.json`` (``walk_forward``) records which model traded which
block, its training and data windows and its out-of-fold AUC and Brier score.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from gal_friday.backtest.classic import MarketStrategy
from gal_friday.backtest.data import PairData, candle_files, load_pairs, synthetic_pairs
from gal_friday.backtest.options import add_parser as add_parser
from gal_friday.backtest.runner import BacktestResult
from gal_friday.backtest.signals import (
    PairSignals,
    check_candle_models,
    default_builder,
    feature_rows_mask,
    model_signals,
    sma_cross_signals,
)
from gal_friday.backtest.walkforward import (
    DAY_S,
    DEFAULT_WINDOW_DAYS,
    Report,
    walk_forward_signals,
)
from gal_friday.candles import CandleFileError, CandleSeries
from gal_friday.config import Settings
from gal_friday.features import candle_feature_names, convergence_rows, warmup_rows
from gal_friday.logs import quiet_stdout
from gal_friday.prediction.model import ModelError
from gal_friday.prediction.service import load_models
from gal_friday.wiring import StrategyFactory, default_strategy

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class BacktestUsageError(ValueError):
    """A bad option value; the message is one line for the user."""


def parse_time(text: str | None) -> int | None:
    """UTC date or date-time text as unix seconds."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BacktestUsageError(
            f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def initial_capital(settings: Settings, args: argparse.Namespace) -> Decimal:
    """``--capital`` (else ``backtest.initial_capital_usd``): a positive amount of USD."""
    text = args.capital or str(settings.backtest.initial_capital_usd)
    try:
        capital = Decimal(text.replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise BacktestUsageError(f"--capital must be an amount of USD, got {text!r}") from None
    if not capital.is_finite() or capital <= 0:
        raise BacktestUsageError(f"--capital must be positive, got {text!r}")
    return capital


def baseline_seeds(settings: Settings, args: argparse.Namespace) -> int:
    """``--baseline-seeds`` (else ``backtest.baseline_seeds``): random-entry runs, 0 or more."""
    text = getattr(args, "baseline_seeds", None)
    if text is None:
        return int(settings.backtest.baseline_seeds)
    try:
        seeds = int(text)
    except ValueError:
        raise BacktestUsageError(
            f"--baseline-seeds must be a whole number of runs, got {text!r}"
        ) from None
    if seeds < 0:
        raise BacktestUsageError(f"--baseline-seeds must be 0 or more, got {text!r}")
    return seeds


def check_options(args: argparse.Namespace) -> None:
    """Refuse option values that cannot describe a run, before any data is read."""
    if args.synthetic is not None and not args.synthetic > 0:
        raise BacktestUsageError(
            f"--synthetic needs a positive number of days, got {args.synthetic:g}"
        )
    if args.synthetic is not None and (args.start or args.end or args.candles):
        raise BacktestUsageError(
            "--start, --end and --candles select candles from files; "
            "they do not apply to --synthetic"
        )
    start, end = parse_time(args.start), parse_time(args.end)
    if start is not None and end is not None and end <= start:
        raise BacktestUsageError(f"--end ({args.end}) must be after --start ({args.start})")


def load_data(settings: Settings, args: argparse.Namespace, history_s: int = 0) -> list[PairData]:
    """The candles of the run; with ``history_s``, also that much before ``--start``."""
    if args.synthetic:
        seed = 7 if args.seed is None else args.seed
        return synthetic_pairs(settings.pairs, seed=seed, days=args.synthetic)
    files = candle_files(settings.pairs, args.candles, Path(settings.paths.data_dir))
    start = parse_time(args.start)
    return load_pairs(
        files, start_s=None if start is None else start - history_s, end_s=parse_time(args.end)
    )


def train_window_days(settings: Settings, args: argparse.Namespace) -> float:
    """``--train-window``, else the training history's length, else 90 days."""
    if args.train_window is not None:
        return float(args.train_window)
    return float(getattr(settings.training, "history_days", None) or DEFAULT_WINDOW_DAYS)


def walk_forward_inputs(
    settings: Settings, args: argparse.Namespace, out: Path, report: Report | None = None
) -> tuple[list[PairData], dict[str, PairSignals], dict[str, Any]]:
    """History and period data, the block models and the period's signals (``--retrain-every``)."""
    if args.strategy != "model":
        raise BacktestUsageError(
            "--retrain-every retrains the model strategy; it does not apply to --strategy sma"
        )
    every, window = float(args.retrain_every), train_window_days(settings, args)
    if every <= 0 or window <= 0:
        raise BacktestUsageError("--retrain-every and --train-window must be positive")
    window_s = round(window * DAY_S)
    data = load_data(settings, args, history_s=window_s)
    start = None if args.synthetic else parse_time(args.start)
    if start is None:  # the data's first window is history only
        start = min(int(d.candles.time_s[0]) for d in data) + window_s
    try:
        return walk_forward_signals(
            settings,
            data,
            start_s=start,
            every_days=every,
            window_days=window,
            models_dir=out / "models",
            build=default_builder(settings.features),
            report=report,
        )
    except ValueError as exc:
        raise BacktestUsageError(str(exc)) from None


def warmup_rows_needed(settings: Settings, args: argparse.Namespace) -> tuple[int, int]:
    """Rows of history the strategy's indicators need before the period's first candle:
    (to converge, at the least). The model's features: ``convergence_rows`` (the recursive
    RSI, MACD and ATR forget where the series began) and ``warmup_rows`` (every feature has a
    value); the SMA crossover: its slow window, both (a window forgets the start at once)."""
    if args.strategy == "sma":
        slow = max(sma_periods(args))
        return slow, slow
    return convergence_rows(settings.features), warmup_rows(settings.features)


def history_rows(series: CandleSeries, first: int, strategy: str) -> int:
    """Rows the indicators see before candle ``first``: the feature rows (candles with
    volume) for the model, every candle for the SMA crossover."""
    if strategy == "sma":
        return first
    return int(np.count_nonzero(feature_rows_mask(series.slice(0, first))))


def _when(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _row_time(series: CandleSeries, rows: int, strategy: str) -> int | None:
    """Start time of the candle with ``rows`` rows before it (None: the series is shorter)."""
    if strategy == "sma":
        return int(series.time_s[rows]) if rows < len(series) else None
    positions = np.flatnonzero(feature_rows_mask(series))
    return int(series.time_s[positions[rows]]) if rows < len(positions) else None


def period_start(
    data: list[PairData], sources: dict[str, str], need: int, least: int, strategy: str
) -> int:
    """Without ``--start``: the first time at which every pair has ``need`` rows of history
    (each pair as many as it has, but at least ``least``); the candles before it only warm."""
    starts = []
    for d in data:
        rows = history_rows(d.candles, len(d.candles), strategy)
        at = _row_time(d.candles, min(need, max(rows - 1, 0)), strategy)
        if rows <= least or at is None:
            raise BacktestUsageError(
                f"{sources[d.pair]}: {rows} rows of {d.pair}, too few to warm up: the "
                f"indicators need {least} rows before the first candle traded ({need} to "
                "converge); give a longer file"
            )
        starts.append(at)
    return max(starts)


def warmup_notes(
    data: list[PairData],
    firsts: dict[str, int],
    sources: dict[str, str],
    start: int,
    need: int,
    least: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Check the history before the period; what the report says about it. ``--start``
    before a pair's first candle, or fewer than ``least`` rows before it, is a usage error
    (exit 2); fewer than ``need`` runs, the missing rows named per pair."""
    pairs: dict[str, dict[str, int]] = {}
    for d in data:
        first_s = int(d.candles.time_s[0])
        ready = _row_time(d.candles, need, args.strategy)
        advice = (
            f"start at {_when(ready)} or later, or give a file that begins earlier"
            if ready is not None
            else "give a file that begins earlier"
        )
        if args.start and start < first_s:
            raise BacktestUsageError(
                f"--start {args.start} is before the first {d.pair} candle in "
                f"{sources[d.pair]} ({_when(first_s)}): the indicators need {need} rows "
                f"of history before the start; {advice}"
            )
        rows = history_rows(d.candles, firsts[d.pair], args.strategy)
        if rows < least:
            raise BacktestUsageError(
                f"{sources[d.pair]}: {rows} rows of {d.pair} before --start {args.start}, "
                f"too few to warm up: the indicators need at least {least} ({need} to "
                f"converge); {advice}"
            )
        pairs[d.pair] = {"history_rows": rows, "missing_rows": max(0, need - rows)}
    return {"rows_to_converge": need, "rows_at_least": least, "pairs": pairs}


def warmed_inputs(
    settings: Settings, args: argparse.Namespace
) -> tuple[list[PairData], dict[str, PairSignals], StrategyFactory, dict[str, Any]]:
    """The period's candles and signals, the signals computed with every candle before the
    period as history, as the live bot starts with its indicators warmed from REST OHLC.

    With ``--start`` the history is all the candle file holds before it; it must hold at
    least the indicators' warm-up (else exit 2), and should hold ``convergence_rows``: with
    fewer, the period's first signals depend on where the file begins, and the report says
    how many rows were missing. Without ``--start`` (and with ``--synthetic``) the data's
    first ``convergence_rows`` rows are history only and the period starts after them."""
    start = parse_time(args.start)
    if args.synthetic:
        full = load_data(settings, args)
        sources = {d.pair: f"the synthetic {d.pair} market" for d in full}
    else:
        files = candle_files(settings.pairs, args.candles, Path(settings.paths.data_dir))
        full = load_pairs(files, start_s=None, end_s=parse_time(args.end))
        sources = {pair: str(path) for pair, path in files.items()}
    need, least = warmup_rows_needed(settings, args)
    if start is None:
        start = period_start(full, sources, need, least, args.strategy)
    firsts = {d.pair: int(np.searchsorted(d.candles.time_s, start)) for d in full}
    for d in full:
        if firsts[d.pair] >= len(d.candles):
            raise CandleFileError(
                f"{sources[d.pair]}: no candles for {d.pair} in the requested range"
            )
    warmup = warmup_notes(full, firsts, sources, start, need, least, args)
    signals, strategy, notes = build_signals(
        settings, full, args, period_start_s=start, firsts=firsts
    )
    period = [replace(d, candles=d.candles.slice(firsts[d.pair], len(d.candles))) for d in full]
    trimmed = {p: trim_signals(s, firsts[p]) for p, s in signals.items()}
    return period, trimmed, strategy, {**notes, "warmup": warmup}


def trim_signals(signals: PairSignals, first: int) -> PairSignals:
    """The signals from row ``first`` on (aligned with candles sliced the same way)."""
    return replace(signals, prob=signals.prob[first:], features=signals.features[first:])


def build_signals(
    settings: Settings,
    data: list[PairData],
    args: argparse.Namespace,
    *,
    period_start_s: int | None = None,
    firsts: dict[str, int] | None = None,
) -> tuple[dict[str, PairSignals], StrategyFactory, dict[str, Any]]:
    """Signals per pair, the strategy that trades them, and notes for the report (a model's
    training window is compared with the period from ``period_start_s`` when given; the
    model predicts from each pair's candle ``firsts[pair]`` on, the candles before it only
    warm the features)."""
    if args.strategy == "sma":
        periods = sma_periods(args)
        return (
            {d.pair: sma_cross_signals(d.candles, *periods) for d in data},
            market_strategy,
            {"strategy": f"sma-{periods[0]}-{periods[1]}"},
        )
    cfg = settings.prediction
    models = load_models(
        [Path(m) for m in cfg.models], cfg.weights or None, candle_feature_names(settings.features)
    )
    check_candle_models(models, settings.features)
    build = default_builder(settings.features)
    signals = {
        d.pair: model_signals(
            d.candles, models, cfg.combine, build, first=(firsts or {}).get(d.pair, 0)
        )
        for d in data
    }
    first = min(int(d.candles.time_s[0]) for d in data)
    first = max(first, period_start_s) if period_start_s is not None else first
    last = max(int(d.candles.time_s[-1]) for d in data)
    described = [
        describe_model_window(
            m.meta.model_id,
            m.meta.data_window,
            first,
            last,
            horizon_s=60 * int(m.meta.label.get("horizon_min", 0)),
        )
        for m in models
    ]
    in_sample = [d["model_id"] for d in described if d["relation"] != "before"]
    return (
        signals,
        default_strategy,
        {"strategy": "model", "models": described, "models_in_sample": in_sample},
    )


def describe_model_window(
    model_id: str, window: dict[str, Any], first_s: int, last_s: int, *, horizon_s: int = 0
) -> dict[str, Any]:
    """A configured model's training data window against the backtest's candles
    ``[first_s, last_s]``: ``before`` (out of sample: the model as of the period; its last
    label's horizon, ``horizon_s`` after the window's last row, ends before the period too),
    ``overlaps`` (in-sample) or ``after`` (trained on data later than the period); a model
    without a recorded window counts as ``overlaps``."""
    start, end = window.get("start_s"), window.get("end_s")
    if end is None:
        relation = "overlaps"
    elif int(end) + horizon_s < first_s:
        relation = "before"
    elif start is not None and int(start) > last_s:
        relation = "after"
    else:
        relation = "overlaps"
    return {
        "model_id": model_id,
        "data_window": {k: window[k] for k in sorted(window)},
        "relation": relation,
    }


def sma_periods(args: argparse.Namespace) -> tuple[int, int]:
    fast, _, slow = args.sma.partition(",")
    try:
        periods = int(fast), int(slow)
    except ValueError:
        raise BacktestUsageError(f"--sma needs FAST,SLOW, got {args.sma!r}") from None
    if min(periods) < 1:
        raise BacktestUsageError(f"--sma periods must be positive, got {args.sma!r}")
    return periods


def market_strategy(s: Settings, bus: Any) -> MarketStrategy:
    return MarketStrategy(s.strategy, s.fees, bus, venue_brackets=s.execution.protective_orders)


def recording_inputs(
    settings: Settings, args: argparse.Namespace
) -> tuple[Any, StrategyFactory, dict[str, Any]]:
    """The predictor and strategy of a ``--recording`` run, and notes for the report."""
    from gal_friday.backtest.recording import ModelPredictor, SmaPredictor
    from gal_friday.features import feature_names

    for option, given in (
        ("--candles", args.candles),
        ("--synthetic", args.synthetic),
        ("--retrain-every", args.retrain_every),
        ("--train-window", args.train_window),
        ("--start", args.start),
        ("--end", args.end),
        ("--depth", args.depth),
        ("--seed", args.seed),
        ("--baseline-seeds", getattr(args, "baseline_seeds", None)),
    ):
        if given is not None and given != []:  # 0 given is given too
            raise BacktestUsageError(f"{option} does not apply to --recording")
    notes: dict[str, Any] = {"source": "recording", "recordings": [str(p) for p in args.recording]}
    if args.strategy == "sma":
        fast, slow = sma_periods(args)
        return (
            SmaPredictor(fast, slow),
            market_strategy,
            {**notes, "strategy": f"sma-{fast}-{slow}"},
        )
    cfg = settings.prediction
    models = load_models(
        [Path(m) for m in cfg.models], cfg.weights or None, feature_names(settings.features)
    )
    return (
        ModelPredictor(models, cfg.combine),
        default_strategy,
        {**notes, "strategy": "model", "models": [m.meta.model_id for m in models]},
    )


def _console() -> Any:
    """The console the summary is printed on. When its reader goes away (``| head``) it
    falls silent and the backtest ends as it would have, with its own exit code (rich
    itself would exit 1 at once)."""
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            quiet_stdout()

    return PipeConsole()


def _setup_failed(console: Any, exc: Exception) -> int:
    """One line for a setup problem: a usage error (exit 2), or a model or candle file that
    cannot be used (1)."""
    console.print(f"gal-friday: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
    return EXIT_USAGE if isinstance(exc, BacktestUsageError) else EXIT_FAILURE


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Per-order logs (and rejections) would drown a backtest's own output."""
    logger = logging.getLogger("gal_friday")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _report(
    console: Any, result: BacktestResult, out: Path, args: argparse.Namespace, notes: dict[str, Any]
) -> dict[str, Path]:
    """Write the report files and print the summary table and the terminal chart."""
    from gal_friday.backtest.report import (
        halt_lines,
        rejection_line,
        summary_table,
        terminal_chart,
        write_report,
    )

    paths: dict[str, Path] = await asyncio.to_thread(
        write_report, result, out, chart=not args.no_chart, extra=notes
    )
    console.print(summary_table(result))
    console.print(terminal_chart(result.equity))
    for line in [*halt_lines(result), rejection_line(result)]:
        if line is not None:
            console.print(line, style="yellow", highlight=False, markup=False)
    return paths


async def run_recording(settings: Settings, args: argparse.Namespace, out: Path) -> int:
    """``--recording``: the event-driven backtest on recorded market data."""
    from gal_friday.backtest.recording import run_recording_backtest
    from gal_friday.kraken.recorder import RecordingError

    console = _console()
    try:
        capital = initial_capital(settings, args)
        predictor, strategy, notes = recording_inputs(settings, args)
    except (BacktestUsageError, ModelError) as exc:
        return _setup_failed(console, exc)
    try:
        with _quiet_logs():
            result = await run_recording_backtest(
                settings, args.recording, capital=capital, predictor=predictor, strategy=strategy
            )
    except (RecordingError, OSError) as exc:
        console.print(f"gal-friday: {exc}", style="red")
        return EXIT_FAILURE
    paths = await _report(console, result, out, args, notes)
    st = result.stats
    console.print(
        f"{st['frames']:,} frames, {st['books']:,} books, {st['decisions']:,} "
        f"decisions, {st['orders']:,} orders, {st['checksum_failures']} checksum "
        f"failures in {st['loop_seconds']:.2f} s; report in "
        f"{', '.join(str(p) for p in paths.values())}"
    )
    if st.get("unreadable_lines") or st.get("truncated_files"):
        console.print(
            f"warning: {st.get('unreadable_lines', 0)} damaged line(s) skipped; "
            f"{st.get('truncated_files', 0)} file(s) cut short (a crash while "
            "recording): the run used what they hold",
            style="yellow",
            highlight=False,
        )
    return EXIT_OK


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the backtest, print the summary and write the report; the exit code."""
    from gal_friday.backtest.runner import run_backtest

    out = args.out or Path(settings.backtest.report_dir) / datetime.now(UTC).strftime(
        "backtest-%Y%m%dT%H%M%SZ"
    )
    if getattr(args, "recording", None):
        return await run_recording(settings, args, out)
    console = _console()
    try:
        capital = initial_capital(settings, args)
        seeds = baseline_seeds(settings, args)
        check_options(args)
        if args.retrain_every is not None:
            data, signals, notes = walk_forward_inputs(
                settings,
                args,
                out,
                lambda line: console.print(line, highlight=False, soft_wrap=True),
            )
            strategy: StrategyFactory = default_strategy
        else:
            if args.train_window is not None:
                raise BacktestUsageError("--train-window needs --retrain-every")
            data, signals, strategy, notes = warmed_inputs(settings, args)
    except (BacktestUsageError, CandleFileError, ModelError) as exc:
        return _setup_failed(console, exc)
    from gal_friday.backtest.report import warmup_lines

    for line in warmup_lines(notes.get("warmup")):
        console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)
    if notes.get("models_in_sample"):
        console.print(
            "warning: the model was trained on data overlapping this backtest (or "
            "after it); its results are in-sample",
            style="yellow",
        )
    rejected = notes.get("walk_forward", {}).get("rejected_blocks")
    if rejected:
        console.print(
            f"warning: {len(rejected)} block(s) without a model trade nothing "
            "(the reasons are in metrics.json, walk_forward.blocks)",
            style="yellow",
        )
    with _quiet_logs():
        result = await _run_with_progress(
            settings, data, signals, strategy, capital, args, run_backtest
        )
    from gal_friday.backtest.baseline import chance_report

    against, lines = await asyncio.to_thread(
        chance_report,
        settings,
        data,
        signals,
        result.metrics,
        result.trades,
        result.stats,
        capital=capital,
        seeds=seeds,
        market_entry=args.strategy == "sma",
    )
    paths = await _report(console, result, out, args, {**notes, **against})
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    candles = result.stats["candles"]
    console.print(
        f"{candles:,} candles in {result.stats['loop_seconds']:.2f} s; report in "
        f"{', '.join(str(p) for p in paths.values())}"
    )
    return EXIT_OK


async def _run_with_progress(
    settings: Settings,
    data: list[PairData],
    signals: dict[str, PairSignals],
    strategy: StrategyFactory,
    capital: Decimal,
    args: argparse.Namespace,
    runner: Any,
) -> Any:
    if args.no_progress:
        return await runner(
            settings,
            data,
            signals,
            capital=capital,
            strategy=strategy,
            depth=args.depth or "volume",
        )
    from rich.console import Console
    from rich.progress import Progress

    # on stderr, as the download's (stdout is the report, which may go through a pipe), and
    # only on a terminal: a redirected stderr gets no bar
    console = Console(stderr=True)
    with Progress(transient=True, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("backtest", total=1)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return await runner(
            settings,
            data,
            signals,
            capital=capital,
            strategy=strategy,
            depth=args.depth or "volume",
            progress=progress,
        )
