"""The backtest report: console summary (rich), CSV of trades and equity, JSON of metrics,
an equity + drawdown chart (PNG, matplotlib's Agg backend) and a terminal chart."""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np

from gal_friday.backtest.runner import BacktestResult
from gal_friday.candles import FloatArray

NS = 1_000_000_000
_MONEY_STEP = Decimal("1e-8")
_LABELS = {
    "total_return_pct": ("Total return", "{:+.2f} %"),
    "sharpe": ("Sharpe", "{:.2f}"),
    "sortino": ("Sortino", "{:.2f}"),
    "max_drawdown": ("Max drawdown", "{:,.2f}"),
    "max_drawdown_pct": ("Max drawdown %", "{:.2f} %"),
    "win_rate_pct": ("Win rate", "{:.1f} %"),
    "profit_factor": ("Profit factor", "{:.2f}"),
    "avg_pnl_per_trade": ("Avg P&L / trade", "{:+.4f}"),
    "trades": ("Trades", "{:d}"),
    "exposure_time_pct": ("Exposure time", "{:.1f} %"),
    "fees_paid": ("Fees paid", "{:,.2f}"),
    "spread_cost": ("Spread cost", "{:,.2f}"),
    "maker_entries_pct": ("Maker share of entries", "{:.1f} %"),
    "maker_exits_pct": ("Maker share of exits", "{:.1f} %"),
    "ambiguous_exits": ("Exits on candles touching both", "{:d}"),
    "final_equity": ("Final equity", "{:,.2f}"),
}


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def metrics_document(result: BacktestResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report: metrics, the run's span and counters (no wall-clock timing, so the
    same inputs give the same file)."""
    stats = {k: v for k, v in result.stats.items() if k != "loop_seconds"}
    halts = [{"time": iso(h.ts_ns), "source": h.source, "reason": h.reason} for h in result.halts]
    return {
        "pairs": list(result.pairs),
        "start": iso(result.start_ns),
        "end": iso(result.end_ns),
        "metrics": result.metrics,
        "counters": stats,
        "open_positions": result.open_positions,
        "halts": halts,
        **(extra or {}),
    }


def rejection_line(result: BacktestResult) -> str | None:
    """Why risk refused signals, when it did (a run with few trades must say why)."""
    by_check = {
        k.removeprefix("rejected_"): v
        for k, v in result.stats.items()
        if k.startswith("rejected_") and isinstance(v, int)
    }
    if not by_check:
        return None
    listed = ", ".join(
        f"{check} {n:,}" for check, n in sorted(by_check.items(), key=lambda kv: -kv[1])
    )
    return (
        f"Risk refused {sum(by_check.values()):,} signal(s), by the check that failed: "
        f"{listed} (metrics.json counters; limits in [risk], minimums from the exchange)"
    )


def halt_lines(result: BacktestResult) -> list[str]:
    """What the console says about HALTs: when, why, and what it cost in skipped entries
    (a run that stopped trading early must not look like a strategy that found nothing)."""
    lines = [f"HALTED at {iso(h.ts_ns)[:19]}Z by {h.source}: {h.reason}" for h in result.halts]
    if lines:
        skipped = result.stats.get("entries_skipped_halted", 0)
        lines.append(
            f"Entries are refused from the first HALT to the end of the run, as live "
            f"until an operator resumes ({skipped:,} entry signals skipped); the "
            f"limits are the [risk] settings of the config."
        )
    return lines


def warmup_lines(warmup: dict[str, Any] | None) -> list[str]:
    """What the console says when a pair had too little history before the period for its
    indicators to converge (``metrics.json``: ``warmup``)."""
    if not warmup:
        return []
    need = warmup["rows_to_converge"]
    return [
        f"warning: {pair} has {p['history_rows']:,} rows of history before the period, "
        f"{p['missing_rows']:,} fewer than the {need:,} its indicators need to converge: its "
        "first signals depend on where the candle file begins"
        for pair, p in warmup["pairs"].items()
        if p["missing_rows"]
    ]


def write_report(
    result: BacktestResult,
    out_dir: Path,
    *,
    chart: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write trades.csv, equity.csv, metrics.json and (``chart``) equity.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "trades": out_dir / "trades.csv",
        "equity": out_dir / "equity.csv",
        "metrics": out_dir / "metrics.json",
    }
    with paths["trades"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            (
                "pair",
                "entry_time",
                "exit_time",
                "qty",
                "entry_price",
                "exit_price",
                "fees",
                "pnl",
                "exit_type",
            )
        )
        for t in result.trades:
            w.writerow(
                (
                    t.pair,
                    iso(t.entry_ns),
                    iso(t.exit_ns),
                    t.qty,
                    t.entry_price,
                    t.exit_price,
                    _money(t.fees),
                    _money(t.pnl),
                    t.exit_type,
                )
            )
    peak = np.maximum.accumulate(result.equity)
    with paths["equity"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("time", "equity", "drawdown_pct"))
        for ts, eq, pk in zip(
            result.times_ns.tolist(), result.equity.tolist(), peak.tolist(), strict=True
        ):
            w.writerow((iso(ts), f"{eq:.6f}", f"{(pk - eq) / pk * 100 if pk else 0.0:.6f}"))
    paths["metrics"].write_text(
        json.dumps(metrics_document(result, extra), indent=2, sort_keys=True) + "\n"
    )
    if chart:
        paths["chart"] = write_chart(result, out_dir / "equity.png")
    return paths


def _money(value: Decimal) -> Decimal:
    """Fees and P&L to 1e-8 USD: exact sums of fills carry twenty digits nobody reads."""
    return value.quantize(_MONEY_STEP, rounding=ROUND_HALF_EVEN)


def write_chart(result: BacktestResult, path: Path) -> Path:
    """Equity (top) and drawdown in percent (bottom), as a PNG; HALTs are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    times = result.times_ns.astype("datetime64[ns]")
    peak = np.maximum.accumulate(result.equity)
    dd = np.where(peak > 0, (result.equity - peak) / peak * 100, 0.0)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot(times, result.equity, lw=0.8, color="tab:blue")
    top.set_ylabel("equity (USD)")
    top.set_title(f"Gal-Friday backtest {', '.join(result.pairs)}")
    bottom.fill_between(times, dd, 0, color="tab:red", alpha=0.5, lw=0)
    bottom.set_ylabel("drawdown %")
    for k, halt in enumerate(result.halts):
        when = np.datetime64(halt.ts_ns, "ns")
        for ax in (top, bottom):
            ax.axvline(
                when,
                color="tab:orange",
                lw=1,
                ls="--",
                label=f"HALT ({halt.source})" if k == 0 and ax is top else None,
            )
    if result.halts:
        top.legend(loc="best", fontsize="small")
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def terminal_chart(values: FloatArray, width: int = 60, height: int = 10) -> str:
    """A line chart in text, for the console: one column per bucket of the curve, spanning
    the bucket's low to high (``│``) with its last value marked (``•``), so a drop inside a
    bucket still shows; the axis runs from the curve's lowest to its highest value."""
    if len(values) == 0:
        return ""
    buckets = np.array_split(values, min(width, len(values)))
    lo, hi = float(np.min(values)), float(np.max(values))
    span = hi - lo or 1.0

    def row(v: float) -> int:
        return height - 1 - round((v - lo) / span * (height - 1))

    rows = [[" "] * len(buckets) for _ in range(height)]
    for x, b in enumerate(buckets):
        for y in range(row(float(b.max())), row(float(b.min())) + 1):
            rows[y][x] = "│"
        rows[row(float(b[-1]))][x] = "•"
    labels = [f"{hi:>12,.2f} ┤"] + [" " * 13 + "│"] * (height - 2) + [f"{lo:>12,.2f} ┤"]
    if hi == lo:
        labels[-1] = " " * 13 + "│"  # a flat curve: one value, said once
    return "\n".join(label + "".join(r) for label, r in zip(labels, rows, strict=True))


def summary_table(result: BacktestResult) -> Any:
    """The console summary as a rich Table."""
    from rich.table import Table

    table = Table(
        title=f"Backtest {', '.join(result.pairs)}  {iso(result.start_ns)[:16]} → "
        f"{iso(result.end_ns)[:16]}",
        show_header=False,
    )
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, (label, fmt) in _LABELS.items():
        value = result.metrics.get(key)
        ok = value is not None and not (isinstance(value, float) and math.isnan(value))
        table.add_row(label, fmt.format(value) if ok else "n/a")
    return table
