"""BacktestingEngine [FR-1001..1008]: history through the live trading modules, on a simulated
clock, with a report. ``data`` loads candles, ``signals`` computes features and predictions
for a whole run (no look-ahead, checked), ``engine`` replays candles through strategy, risk,
execution (paper venue) and portfolio, ``metrics`` and ``report`` summarise, ``cli`` is the
``gal-friday backtest`` command."""
