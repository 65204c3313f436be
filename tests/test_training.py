"""Training: labels without look-ahead, honest walk-forward folds, calibration scored out of
sample, a skill floor over climatology, model files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from gal_friday.candles import CandleSeries
from gal_friday.prediction import training
from gal_friday.prediction.metrics import auc, brier, brier_skill, isotonic_fit, log_loss
from gal_friday.prediction.model import Calibration, load_metadata
from gal_friday.prediction.training import (
    ModelRejected,
    TrainSpec,
    make_labels,
    summary_line,
    train_model,
    walk_forward,
)


def candles_from_returns(returns: np.ndarray, start: int = 1_700_000_000) -> CandleSeries:
    close = 2.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([2.0], close[:-1]))
    high = np.maximum(open_, close) * 1.0002
    low = np.minimum(open_, close) * 0.9998
    n = len(close)
    return CandleSeries(
        np.arange(n, dtype=np.int64) * 60 + start,
        open_,
        high,
        low,
        close,
        np.ones(n),
        np.ones(n, dtype=np.int64),
    )


def momentum_market(n: int, seed: int, phi: float) -> CandleSeries:
    """AR(1) returns: with phi > 0 the last move predicts the next."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    noise = rng.normal(0, 0.001, n)
    for i in range(1, n):
        r[i] = phi * r[i - 1] + noise[i]
    return candles_from_returns(r)


def past_returns(c: CandleSeries) -> tuple[tuple[str, ...], np.ndarray]:
    """A causal test feature builder: the last three log returns."""
    lr = np.concatenate(([np.nan], np.diff(np.log(c.close))))
    cols = [lr, np.concatenate(([np.nan], lr[:-1])), np.concatenate(([np.nan] * 2, lr[:-2]))]
    return ("ret_1", "ret_2", "ret_3"), np.column_stack(cols)


def test_label_marks_an_up_move_of_the_threshold_within_the_horizon() -> None:
    c = candles_from_returns(np.zeros(10))
    high = c.high.copy()
    high[4] = c.close[1] * 1.002  # 3 minutes after row 1: within a 5-minute horizon
    c = CandleSeries(c.time_s, c.open, high, c.low, c.close, c.volume, c.trades)
    labels = make_labels(c, threshold_pct=0.1, horizon_min=5)
    assert labels[1] == 1.0 and labels[0] == 1.0
    assert labels[4] == 0.0  # its own candle does not count: only the future does
    assert np.isnan(labels[-5:]).all()  # horizon runs past the data


def test_label_uses_only_the_future_and_never_beyond_the_horizon() -> None:
    c = momentum_market(500, 1, 0.3)
    base = make_labels(c, 0.1, 5)
    t = 200
    for changed in (range(0, t), range(t + 6, 500)):  # the past, and beyond the horizon
        high = c.high.copy()
        high[list(changed)] *= 1.5
        mutated = CandleSeries(c.time_s, c.open, high, c.low, c.close, c.volume, c.trades)
        assert make_labels(mutated, 0.1, 5)[t] == base[t]


def test_label_respects_gaps_in_time() -> None:
    c = candles_from_returns(np.zeros(12))
    times = c.time_s.copy()
    times[3:] += 600  # a 10-minute gap after row 2
    high = c.high.copy()
    high[3] = c.close[2] * 1.01
    gapped = CandleSeries(times, c.open, high, c.low, c.close, c.volume, c.trades)
    assert make_labels(gapped, 0.1, 5)[2] == 0.0  # the jump is 11 minutes later


def test_features_have_no_look_ahead() -> None:
    c = momentum_market(400, 2, 0.3)
    _, base = past_returns(c)
    close = c.close.copy()
    close[201:] *= 1.3  # rewrite the future after row 200
    _, after = past_returns(
        CandleSeries(c.time_s, c.open, c.high, c.low, close, c.volume, c.trades)
    )
    np.testing.assert_array_equal(base[:201], after[:201])


@pytest.mark.parametrize("window", ["expanding", "rolling"])
def test_walk_forward_never_trains_on_its_test_window(window: str) -> None:
    folds = walk_forward(10_000, 4, horizon=5, window=window)  # type: ignore[arg-type]
    for fold in folds:
        assert fold.train[1] + 5 <= fold.test[0]  # purged gap of one horizon
        assert fold.train[0] < fold.train[1] <= fold.test[0] < fold.test[1]
    tests = [f.test for f in folds]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(tests))  # consecutive
    if window == "expanding":
        assert all(f.train[0] == 0 for f in folds)


def test_metrics_match_hand_computed_values() -> None:
    y = np.array([0.0, 0.0, 1.0, 1.0])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(y, p) == 0.75
    assert np.isclose(brier(y, p), (0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert np.isclose(log_loss(y, p), -np.mean(np.log([0.9, 0.6, 0.35, 0.8])))
    raw, cal = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert cal == (0.0, 0.5, 0.5, 1.0) and raw == (0.1, 0.2, 0.3, 0.4)


@pytest.mark.parametrize("folds", [0, 1])
def test_walk_forward_needs_a_fold_to_calibrate_and_one_to_score(folds: int) -> None:
    with pytest.raises(ValueError, match="at least two folds"):
        walk_forward(10_000, folds, horizon=5, window="expanding")


def test_brier_skill_is_relative_to_the_reference() -> None:
    assert brier_skill(0.2, 0.25) == pytest.approx(0.2)
    assert brier_skill(0.25, 0.25) == 0.0 and brier_skill(0.3, 0.25) < 0
    assert brier_skill(0.0, 0.0) == 0.0 and brier_skill(0.1, 0.0) == float("-inf")


class ColumnModel:
    """A stand-in for LightGBM whose prediction is the first feature column as given, so the
    out-of-fold predictions are known in advance."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x[:, 0], dtype=np.float64)

    def model_to_string(self) -> str:
        return "column model"


def test_calibrated_metrics_are_scored_on_rows_the_map_never_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predictions that are pure noise: an isotonic map fitted on the rows it scores makes
    them look better than climatology; each fold calibrated on earlier folds only does not."""
    monkeypatch.setattr(training, "_fit", lambda x, y, spec: ColumnModel())
    market = momentum_market(8_000, 5, 0.0)
    noise = np.random.default_rng(0).uniform(0.2, 0.8, len(market))

    def noise_column(c: CandleSeries) -> tuple[tuple[str, ...], np.ndarray]:
        return ("noise",), noise[:, None]

    spec = TrainSpec(threshold_pct=0.1, horizon_min=3, folds=4, min_auc=0.0, min_brier_skill=None)
    result = train_model(market, noise_column, spec, tmp_path / "m", progress=False)

    # the same protocol, computed independently from the known predictions
    labels = make_labels(market, spec.threshold_pct, spec.horizon_min)
    keep = ~np.isnan(labels)
    y, p = labels[keep], noise[keep]
    folds = walk_forward(len(y), spec.folds, spec.horizon_min, spec.window)
    model_se, clim_se = [], []
    for fold in folds[1:]:
        before = np.arange(folds[0].test[0], fold.test[0] - spec.horizon_min)  # purged
        cal_map = Calibration(*isotonic_fit(p[before], y[before]))
        test = np.arange(*fold.test)
        model_se.append((np.array([cal_map.apply(v) for v in p[test]]) - y[test]) ** 2)
        clim_se.append((y[before].mean() - y[test]) ** 2)
    scored = np.arange(folds[1].test[0], folds[-1].test[1])
    forward_brier = float(np.concatenate(model_se).mean())
    climatology = float(np.concatenate(clim_se).mean())

    s = result.summary
    assert s["calibrated_rows"] == len(scored) and s["calibrated_folds"] == spec.folds - 1
    assert s["calibrated_brier"] == pytest.approx(forward_brier, rel=1e-12)
    assert s["climatology_brier"] == pytest.approx(climatology, rel=1e-12)
    assert s["brier_skill"] == pytest.approx(1 - forward_brier / climatology, rel=1e-9)
    assert s["brier_skill"] < 0  # noise has no skill out of sample...

    # ...but the map fitted on every out-of-fold row and scored on those rows flatters it
    all_oof = np.arange(folds[0].test[0], folds[-1].test[1])
    in_sample_map = Calibration(*isotonic_fit(p[all_oof], y[all_oof]))
    in_sample = brier(y[scored], np.array([in_sample_map.apply(v) for v in p[scored]]))
    own_rate = brier(y[scored], np.full(len(scored), y[scored].mean()))
    assert in_sample < own_rate and in_sample < s["calibrated_brier"]
    # the saved (live) map is that one, fitted on all out-of-fold predictions
    meta = load_metadata(tmp_path / "m")
    assert meta.calibration == in_sample_map
    # each fold's entry says what its map was fitted on; fold 0 only warms it up
    fold_entries = [f for f in meta.fold_metrics if isinstance(f["fold"], int)]
    assert fold_entries[0]["calibrated_brier"] is None
    assert [f["calibration_rows"] for f in fold_entries] == [
        0,
        *(f.test[0] - spec.horizon_min - folds[0].test[0] for f in folds[1:]),
    ]


def test_a_model_without_information_is_rejected_although_its_brier_is_below_025(
    tmp_path: Path,
) -> None:
    """A random walk: the old absolute floor (Brier <= 0.25) is passed by climatology alone,
    the skill floor is not. min_auc is off, so only the skill floor can reject it."""
    spec = TrainSpec(threshold_pct=0.12, horizon_min=3, folds=3, rounds=30, min_auc=0.0)
    with pytest.raises(ModelRejected) as rejected:
        train_model(
            momentum_market(6_000, 4, 0.0), past_returns, spec, tmp_path / "m", progress=False
        )
    s = rejected.value.summary
    assert s["calibrated_brier"] < 0.25 and s["climatology_brier"] < 0.25
    assert s["brier_skill"] <= spec.min_brier_skill
    message = str(rejected.value)
    assert message.startswith("model rejected: Brier skill score -")
    assert "over climatology is not above the margin 0.002" in message
    assert f"climatology Brier {s['climatology_brier']:.5f}" in message and "\n" not in message
    assert not (tmp_path / "m").exists()


def test_a_model_with_real_signal_is_accepted_and_saved(tmp_path: Path) -> None:
    spec = TrainSpec(threshold_pct=0.05, horizon_min=3, folds=3, rounds=60)
    result = train_model(
        momentum_market(12_000, 3, 0.4),
        past_returns,
        spec,
        tmp_path / "m",
        model_id="test-model",
        progress=False,
    )
    meta = load_metadata(tmp_path / "m")
    assert meta.model_id == "test-model" and meta.feature_names == ("ret_1", "ret_2", "ret_3")
    assert meta.label == {"kind": "up_move", "threshold_pct": 0.05, "horizon_min": 3}
    s = result.summary
    assert s["mean_auc"] > 0.6
    assert s["brier_skill"] > spec.min_brier_skill  # type: ignore[operator]
    assert s["calibrated_brier"] < s["climatology_brier"]
    assert len([f for f in meta.fold_metrics if isinstance(f["fold"], int)]) == 3
    pooled = meta.fold_metrics[-1]
    assert pooled["fold"] == "out_of_fold_calibrated"
    assert pooled["climatology_brier"] == s["climatology_brier"]
    assert pooled["brier_skill"] == s["brier_skill"]
    assert meta.calibration.raw and "lightgbm" in meta.library_versions
    assert meta.data_window["rows"] > 11_000


def test_a_model_without_signal_is_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    spec = TrainSpec(threshold_pct=0.05, horizon_min=3, folds=3, rounds=30, min_auc=0.55)
    with pytest.raises(ModelRejected, match=r"mean AUC .* below the floor 0\.55"):
        train_model(
            momentum_market(6_000, 4, 0.0), past_returns, spec, tmp_path / "m", progress=False
        )
    assert not (tmp_path / "m").exists()


def test_the_report_line_prints_the_model_climatology_and_skill() -> None:
    line = summary_line(
        {
            "mean_auc": 0.6038,
            "calibrated_folds": 3,
            "calibrated_rows": 97_194,
            "calibrated_brier": 0.24102,
            "climatology_brier": 0.24933,
            "brier_skill": 0.03333,
            "calibrated_log_loss": 0.6747,
        }
    )
    assert "calibrated Brier 0.24102, climatology Brier 0.24933, Brier skill +0.0333" in line
    assert "out of sample on the last 3 of 4 folds (97194 rows" in line


def test_an_absolute_brier_ceiling_still_applies_when_configured(tmp_path: Path) -> None:
    spec = TrainSpec(threshold_pct=0.05, horizon_min=3, folds=3, rounds=30, max_brier=0.1)
    with pytest.raises(ModelRejected, match=r"calibrated Brier score 0\.\d+ is above the ceiling"):
        train_model(
            momentum_market(8_000, 3, 0.4), past_returns, spec, tmp_path / "m", progress=False
        )
