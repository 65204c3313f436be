"""The research table: a candle file in, its candle features as CSV out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from gal_friday.candles import CandleFileError, read_candles, write_candles
from gal_friday.config import FeatureSettings
from gal_friday.features import (
    batch_candle_features,
    candle_feature_names,
    read_feature_table,
    write_feature_table,
)
from tests.test_features_agreement import random_walk


def candle_file(path: Path, n: int) -> Path:
    series = random_walk(n, 0.5, seed=4, decimals=6)
    rows = [
        (
            int(t),
            repr(float(o)),
            repr(float(h)),
            repr(float(lo)),
            repr(float(c)),
            "0" if i == 100 else repr(float(v)),
            int(k),
        )
        for i, (t, o, h, lo, c, v, k) in enumerate(
            zip(
                series.time_s,
                series.open,
                series.high,
                series.low,
                series.close,
                series.volume,
                series.trades,
                strict=True,
            )
        )
    ]
    write_candles(path, rows)
    return path


def test_table_has_time_and_candle_features_and_matches_the_batch_values(
    tmp_path: Path,
) -> None:
    settings = FeatureSettings()
    candles = candle_file(tmp_path / "XRPUSD_1.csv", 400)
    out = tmp_path / "out" / "features.csv"
    written = write_feature_table(candles, out, settings)
    assert written == 399  # the row without volume is not a row
    with out.open(newline="") as fh:
        header, first, *_ = csv.reader(fh)
    assert header == ["time_s", *candle_feature_names(settings)]
    assert first[1:] == [""] * len(header[1:])  # warm-up: no feature has a value yet
    table = read_feature_table(out)
    expected = batch_candle_features(read_candles(candles), settings)
    np.testing.assert_array_equal(table.time_s, expected.time_s)
    np.testing.assert_array_equal(table.values, expected.values)  # exact round trip, NaN too
    assert not (tmp_path / "out" / "features.csv.tmp").exists()


def test_a_bad_candle_file_is_a_candle_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("1700000000,1,2,0.5,x,10,3\n")
    with pytest.raises(CandleFileError):
        write_feature_table(bad, tmp_path / "f.csv", FeatureSettings())
    assert not (tmp_path / "f.csv").exists()
