"""The history, feature and training commands end to end against the simulator."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from gal_friday.prediction.model import load_metadata


def gal_friday(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gal_friday", "--exchange", "sim", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_download_features_and_train_from_a_fresh_directory(in_tmp: Path) -> None:
    dl = gal_friday("download", "--pair", "XRP/USD", "--days", "0.5", "--no-progress", cwd=in_tmp)
    assert dl.returncode == 0, dl.stderr
    candles = in_tmp / "data" / "XRPUSD_1.csv"
    assert candles.is_file() and "XRP/USD:" in dl.stdout

    again = gal_friday(
        "download", "--pair", "XRP/USD", "--days", "0.5", "--no-progress", cwd=in_tmp
    )
    assert again.returncode == 0, again.stderr

    feats = gal_friday("features", "--candles", str(candles), "--out", "f.csv", cwd=in_tmp)
    assert feats.returncode == 0, feats.stderr
    with (in_tmp / "f.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header[0] == "time_s" and "rsi_14" in header

    ok = gal_friday(
        "train",
        "--candles",
        str(candles),
        "--out",
        "models/m",
        "--model-id",
        "cli-test",
        "--no-progress",
        "--set",
        "training.min_auc=0",
        "--set",
        "training.min_brier_skill=off",
        "--set",
        "training.folds=2",
        "--set",
        "training.rounds=20",
        cwd=in_tmp,
    )
    assert ok.returncode == 0, ok.stderr
    assert "model cli-test accepted" in ok.stdout
    assert "climatology Brier 0." in ok.stdout and "Brier skill " in ok.stdout
    meta = load_metadata(in_tmp / "models" / "m")
    assert "rsi_14" in meta.feature_names and meta.label["horizon_min"] == 5


def test_a_model_below_the_floor_is_refused_with_one_line(in_tmp: Path) -> None:
    dl = gal_friday("download", "--pair", "DOGE/USD", "--days", "0.4", "--no-progress", cwd=in_tmp)
    assert dl.returncode == 0, dl.stderr
    bad = gal_friday(
        "train",
        "--candles",
        "data/XDGUSD_1.csv",
        "--no-progress",
        "--set",
        "training.min_auc=0.99",
        "--set",
        "training.folds=2",
        "--set",
        "training.rounds=10",
        cwd=in_tmp,
    )
    assert bad.returncode == 1
    assert "model rejected: mean AUC" in bad.stderr and "Traceback" not in bad.stderr
    assert not (in_tmp / "models" / "default").exists()


def test_missing_candle_file_and_missing_model_are_clear_errors(in_tmp: Path) -> None:
    feats = gal_friday("features", "--candles", "nope.csv", "--out", "f.csv", cwd=in_tmp)
    assert feats.returncode == 1 and "candle file not found: nope.csv" in feats.stderr
    live = subprocess.run(
        [
            sys.executable,
            "-m",
            "gal_friday",
            "--no-ui",
            "--set",
            'kraken.ws_public_url="ws://127.0.0.1:9/v2"',
            "--set",
            'kraken.rest_url="http://127.0.0.1:9"',
        ],
        cwd=in_tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert live.returncode == 1
    assert "gal-friday train" in live.stderr and "Traceback" not in live.stderr
