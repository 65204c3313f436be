"""FeatureEngine: market data in, one feature vector per pair per closed candle out.

Per pair it keeps the incremental candle state, the latest verified book and the pending
trades. On each *new* closed candle it publishes ``FeatureEvent(pair, ts_ns, names, values)``
with ``names == feature_names(settings)``; ``ts_ns`` is the candle's open time, the same key
as ``time_s`` in candle files and feature tables, and the vector describes the market as of
that candle's close (book: the latest one then).

Rules, each for a reason:

* in-progress candles are ignored: only a closed candle is final;
* a closed candle whose open time is not newer than the last one processed for its pair is a
  repeat (Kraken re-sends history after a reconnect) and is ignored: nothing counts twice;
* a closed candle without volume is not a row (Kraken's files omit such intervals, so
  training never saw them); missing minutes are simply absent and rows stay consecutive;
* a closed candle received more than ``max_candle_age_s`` after its close (snapshot history)
  updates the indicators but publishes nothing: no decision is taken on old data;
* after ``BookInvalidatedEvent`` the book features are NaN until the next book snapshot.
"""

from __future__ import annotations

import logging

from gal_friday.bus import EventBus, Policy, Subscription
from gal_friday.candles import CandleSeries
from gal_friday.config import FeatureSettings
from gal_friday.events import (
    BookEvent,
    BookInvalidatedEvent,
    CandleEvent,
    Event,
    FeatureEvent,
    TradeEvent,
)
from gal_friday.features.book import book_features
from gal_friday.features.flow import TradeFlow
from gal_friday.features.incremental import CandleFeatureState, is_feature_row
from gal_friday.features.names import convergence_rows, feature_names

log = logging.getLogger(__name__)

_NS = 1_000_000_000


class PairFeatures:
    """All feature state of one pair; pure logic, no bus."""

    def __init__(self, pair: str, settings: FeatureSettings) -> None:
        self.pair = pair
        self.levels = settings.book_levels
        self.candles = CandleFeatureState(settings)
        self.flow = TradeFlow()
        self.book: BookEvent | None = None
        self._book_valid = True
        self.last_open_ns: int | None = None
        self.repeats = 0

    def on_book(self, book: BookEvent) -> None:
        """Keep the latest book; after an invalidation only a snapshot makes it usable."""
        if self._book_valid or book.is_snapshot:
            self.book = book
            self._book_valid = True

    def on_book_invalidated(self) -> None:
        self.book = None
        self._book_valid = False
        self.flow.break_run()

    def on_trade(self, trade: TradeEvent) -> None:
        self.flow.add(trade)

    def is_new_row(self, candle: CandleEvent) -> bool:
        """Closed, newer than the last one processed, and with volume; marks it processed."""
        if not candle.closed:
            return False
        if self.last_open_ns is not None and candle.open_ts_ns <= self.last_open_ns:
            self.repeats += 1
            return False
        self.last_open_ns = candle.open_ts_ns
        return is_feature_row(float(candle.low), float(candle.volume))

    def on_candle(self, candle: CandleEvent) -> tuple[float, ...] | None:
        """The feature vector of a new closed candle (``feature_names`` order), else None."""
        if not self.is_new_row(candle):
            return None
        row = self.candles.update(
            float(candle.high), float(candle.low), float(candle.close), float(candle.volume)
        )
        end_ns = candle.open_ts_ns + candle.interval_s * _NS
        flow = self.flow.close(candle.open_ts_ns, end_ns)
        return row + book_features(self.book, self.levels) + flow

    def prime(self, series: CandleSeries) -> int:
        """Warm the indicators from history (e.g. a candle file) older than anything seen;
        returns the rows used. Nothing is published for them."""
        used = 0
        for t, high, low, close, volume in zip(
            series.time_s.tolist(),
            series.high.tolist(),
            series.low.tolist(),
            series.close.tolist(),
            series.volume.tolist(),
            strict=True,
        ):
            open_ns = t * _NS
            if self.last_open_ns is not None and open_ns <= self.last_open_ns:
                continue
            self.last_open_ns = open_ns
            if is_feature_row(low, volume):
                self.candles.update(high, low, close, volume)
                used += 1
        return used


class FeatureEngine:
    """Subscribes to candles, books and trades; publishes a FeatureEvent per new closed candle."""

    def __init__(self, settings: FeatureSettings, bus: EventBus) -> None:
        self.settings = settings
        self.bus = bus
        self.names = feature_names(settings)
        self.pairs: dict[str, PairFeatures] = {}
        self.published = 0
        self.withheld_stale = 0
        self._max_age_ns = int(settings.max_candle_age_s * _NS)

    def attach(self, *, maxsize: int = 4096) -> Subscription:
        """One BLOCK subscription for all four types, so they are handled in arrival order."""
        return self.bus.subscribe(
            (CandleEvent, BookEvent, BookInvalidatedEvent, TradeEvent),
            self.on_event,
            name="features",
            policy=Policy.BLOCK,
            maxsize=maxsize,
        )

    def state(self, pair: str) -> PairFeatures:
        found = self.pairs.get(pair)
        if found is None:
            found = self.pairs[pair] = PairFeatures(pair, self.settings)
        return found

    async def on_event(self, event: Event) -> None:
        """Route one market-data event; publish when it completes a feature vector."""
        if type(event) is BookEvent:
            self.state(event.pair).on_book(event)
        elif type(event) is TradeEvent:
            self.state(event.pair).on_trade(event)
        elif type(event) is CandleEvent:
            feature_event = self.on_candle(event)
            if feature_event is not None:
                await self.bus.publish(feature_event)
        elif type(event) is BookInvalidatedEvent:
            self.state(event.pair).on_book_invalidated()

    def on_candle(self, candle: CandleEvent) -> FeatureEvent | None:
        """Update the pair's state; the FeatureEvent to publish, or None (not new, or stale)."""
        values = self.state(candle.pair).on_candle(candle)
        if values is None:
            return None
        close_ns = candle.open_ts_ns + candle.interval_s * _NS
        if self._max_age_ns and candle.received_ts_ns - close_ns > self._max_age_ns:
            self.withheld_stale += 1
            return None
        self.published += 1
        return FeatureEvent(candle.pair, candle.open_ts_ns, self.names, values)

    def prime(self, pair: str, series: CandleSeries) -> int:
        """Warm one pair's indicators from history before going live; rows used. Fewer than
        ``convergence_rows`` (210 with the defaults; Kraken's REST OHLC gives at most 720
        candles, enough unless the periods are made much longer) leave the recursive
        indicators depending on where the history began until that many rows have passed:
        a warning says so."""
        state = self.state(pair)
        used = state.prime(series)
        have, need = state.candles.rows, convergence_rows(self.settings)
        log.info("features primed from history", extra={"pair": pair, "rows": used, "needed": need})
        if have < need:
            log.warning(
                "too little history to converge the indicators: their first values depend "
                "on where it began",
                extra={"pair": pair, "rows": have, "needed": need, "missing": need - have},
            )
        return used
