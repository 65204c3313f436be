"""Kraken adapter: the only code that knows Kraken's wire formats.

Everything outside this package speaks domain types (pairs, book levels in scaled
integers or Decimal, candles, trades) and domain events.
"""
