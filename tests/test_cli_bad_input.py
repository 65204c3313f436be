"""Bad input found on main, each through the real ``gal-friday`` command: one line naming the
problem (and the path or value), exit 2 for a bad flag or setting, 1 for a file or folder the
run cannot use, never a traceback, and nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def gal_friday(
    *args: str,
    cwd: Path,
    stdout: int | None = subprocess.PIPE,
    timeout: float = 120,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAL_FRIDAY_", "KRAKEN_"))}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "gal_friday", *args],
        cwd=cwd,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def one_line(stderr: str) -> str:
    """The single line a bad input ends with (log lines on stderr are JSON objects)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line and not line.startswith("{")]
    assert len(lines) == 1, stderr
    return lines[0]


# --- the data folder: read-only, or its parent missing -------------------------------------


def as_a_user() -> tuple[str, ...]:
    """A command prefix under which file permissions hold: root ignores them (it has
    CAP_DAC_OVERRIDE), so as root the command runs without that capability."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "as root this test needs setpriv (util-linux)"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search")


DATA_COMMANDS = [
    ("--no-ui", "--duration", "30"),
    ("download", "--pair", "XRP/USD", "--days", "0.1", "--no-progress"),
    ("record", "--out", "rec.jsonl.gz", "--duration", "30"),
    ("train", "--no-progress"),
]


@pytest.mark.parametrize("args", DATA_COMMANDS)
def test_a_read_only_data_folder_is_one_line_naming_it_and_what_it_holds(
    args: tuple[str, ...], in_tmp: Path
) -> None:
    data = in_tmp / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        done = gal_friday("--exchange", "sim", *args, cwd=in_tmp, prefix=as_a_user())
    finally:
        data.chmod(0o755)
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        "gal-friday: cannot write in the data folder data (Permission denied); it holds the "
        "audit store, the session journals, the control socket and candle files"
    )
    assert list(data.iterdir()) == []


@pytest.mark.parametrize("args", DATA_COMMANDS)
def test_a_data_folder_whose_parent_is_missing_is_named_and_not_created(
    args: tuple[str, ...], in_tmp: Path
) -> None:
    done = gal_friday(
        "--exchange", "sim", "--set", 'paths.data_dir="mnt/disk/data"', *args, cwd=in_tmp
    )
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        "gal-friday: cannot create the data folder mnt/disk/data: its parent folder mnt/disk "
        "does not exist (a disk not mounted, or a mistyped path?); create it first"
    )
    assert not (in_tmp / "mnt").exists()


def test_a_read_only_output_folder_names_the_file_that_could_not_be_written(
    in_tmp: Path,
) -> None:
    (in_tmp / "c.csv").write_text("".join(f"{1700000040 + 60 * i},1,1,1,1,5,1\n" for i in range(3)))
    out = in_tmp / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        feats = gal_friday(
            "features", "--candles", "c.csv", "--out", "out/f.csv", cwd=in_tmp, prefix=as_a_user()
        )
        rec = gal_friday(
            "--exchange", "sim", "record", "--out", "out/r.jsonl.gz", "--duration", "30",
            cwd=in_tmp, prefix=as_a_user(),
        )  # fmt: skip
    finally:
        out.chmod(0o755)
    assert feats.returncode == 1 and rec.returncode == 1
    assert one_line(feats.stderr) == (
        "gal-friday: cannot write the feature table out/f.csv: Permission denied"
    )
    assert one_line(rec.stderr) == (
        "gal-friday: cannot write the recording out/r.jsonl.gz: Permission denied"
    )


# --- a pair the simulator does not serve --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "unknown"),
    [
        (("--exchange", "sim", "--pairs", "BTC/USD", "--no-ui"), "BTC/USD"),
        (("--pairs", "XRP/USD,ETH/USD,BTC/USD", "sim-exchange"), "ETH/USD, BTC/USD"),
        (("--exchange", "sim", "download", "--pair", "BTC/USD"), "BTC/USD"),
        (("--exchange", "sim", "train", "--pair", "BTC/USD"), "BTC/USD"),
    ],
)
def test_an_unknown_pair_on_the_simulator_is_one_line_listing_the_pairs_it_serves(
    args: tuple[str, ...], unknown: str, in_tmp: Path
) -> None:
    done = gal_friday(*args, cwd=in_tmp)
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        f"gal-friday: the simulator has no pair {unknown}; it serves XRP/USD, DOGE/USD"
    )
    assert not (in_tmp / "data").exists()  # refused before anything started


# --- a damaged SQLite store ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_a_damaged_sqlite_store_refuses_the_start_in_every_mode(mode: str, in_tmp: Path) -> None:
    """Before: paper mode took it for a database that was away, spilled to a file and ended
    with exit 0. Now the run refuses to start before it trades, and the file is left as is."""
    store = in_tmp / "data" / f"gal-friday-sim-{mode}.sqlite3"
    store.parent.mkdir()
    store.write_bytes(b"not a database, whatever it once was\n" * 200)
    args = ("--exchange", "sim", "--mode", mode, "--no-ui", "--duration", "30")
    done = gal_friday(*args, cwd=in_tmp)
    assert done.returncode == 1
    assert one_line(done.stderr) == (
        f"gal-friday: the audit store data/{store.name} is damaged (file is not a database); "
        "restore it from a backup, or move it aside to start a new one (its orders and fills "
        "are then not known to the bot)"
    )
    assert store.read_bytes() == b"not a database, whatever it once was\n" * 200
    events = [json.loads(line)["event"] for line in done.stdout.splitlines() if line[:1] == "{"]
    assert "trading" not in events and "audit store unreachable at start" not in " ".join(events)


# --- a truncated model file ---------------------------------------------------------------


def save_truncated_model(directory: Path) -> Path:
    """A small model on three real features, its model.txt then cut in half."""
    import lightgbm
    import numpy as np

    from gal_friday.config import FeatureSettings
    from gal_friday.features import candle_feature_names
    from gal_friday.prediction.model import ModelMetadata, save_model_files

    names = candle_feature_names(FeatureSettings())[:3]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3))
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(x, (x[:, 0] > 0).astype(int)),
        10,
    )
    meta = ModelMetadata("cut", names, {"threshold_pct": 0.1, "horizon_min": 5})
    save_model_files(directory, booster.model_to_string(), meta)
    path = directory / "model.txt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("--no-ui", "--duration", "30"),  # loaded by the inference worker processes
        ("backtest", "--synthetic", "1", "--no-progress"),  # loaded in the command's process
    ],
)
def test_a_truncated_model_file_is_one_line_naming_it(args: tuple[str, ...], in_tmp: Path) -> None:
    path = save_truncated_model(in_tmp / "models" / "default")
    done = gal_friday("--exchange", "sim", *args, cwd=in_tmp)
    assert done.returncode == 1
    assert "LightGBM" not in done.stderr + done.stdout  # its own fatal lines never show
    assert one_line(done.stderr if done.stderr.strip() else done.stdout) == (
        f"gal-friday: {path.relative_to(in_tmp)} is damaged: it does not match the SHA-256 "
        "recorded in model.json (cut short or changed after training); restore it or retrain "
        "with 'gal-friday train'"
    )


# --- a candle file with high < low ----------------------------------------------------------

BAD_CANDLES = (
    "1700000040,1.0,1.1,0.9,1.0,5,1\n"
    "1700000100,1.0,1.1,0.9,1.05,5,1\n"
    "1700000160,1.0,0.9,1.1,1.0,5,1\n"  # line 3: high below low
    "1700000220,1.0,0.8,1.2,1.0,5,1\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ("features", "--candles", "bad.csv", "--out", "f.csv"),
        ("train", "--candles", "bad.csv", "--no-progress"),
        ("backtest", "--candles", "XRP/USD=bad.csv", "--pairs", "XRP/USD", "--strategy", "sma"),
    ],
)
def test_a_candle_file_with_high_below_low_is_refused_naming_the_file_and_line(
    args: tuple[str, ...], in_tmp: Path
) -> None:
    (in_tmp / "bad.csv").write_text(BAD_CANDLES)
    done = gal_friday("--exchange", "sim", *args, cwd=in_tmp)
    assert done.returncode == 1
    assert one_line(done.stderr if done.stderr.strip() else done.stdout) == (
        "gal-friday: bad.csv:3: high and low do not enclose open and close "
        "(open 1.0, high 0.9, low 1.1, close 1.0)"
    )
    assert not (in_tmp / "f.csv").exists() and not (in_tmp / "models").exists()


def test_too_few_candles_to_train_is_one_line_saying_what_to_give(in_tmp: Path) -> None:
    rows = "".join(
        f"{1700000000 + 60 * i},1.0,1.1,0.9,1.0,5,1\n" for i in range(120)
    )  # two hours: far from four folds of 150 rows
    (in_tmp / "short.csv").write_text(rows)
    done = gal_friday("train", "--candles", "short.csv", "--no-progress", cwd=in_tmp)
    assert done.returncode == 1
    line = one_line(done.stderr if done.stderr.strip() else done.stdout)
    assert line.startswith("gal-friday: not enough candles to train: "), line
    assert "fewer training.folds" in line
    assert not (in_tmp / "models").exists()


# --- a reader that goes away: `gal-friday config | head` -------------------------------------


def closed_pipe() -> int:
    """The write end of a pipe whose reader has already gone, as after ``head`` exits."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize(
    "args",
    [
        ("config",),
        ("config", "--json"),
        ("--exchange", "sim", "backtest", "--synthetic", "1", "--strategy", "sma", "--no-chart"),
    ],
)
def test_a_closed_stdout_ends_the_output_quietly(args: tuple[str, ...], in_tmp: Path) -> None:
    out = closed_pipe()
    try:
        done = gal_friday(*args, cwd=in_tmp, stdout=out)
    finally:
        os.close(out)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_with_stdout_closed_a_command_still_does_all_its_work_and_keeps_its_exit_code(
    in_tmp: Path,
) -> None:
    out = closed_pipe()
    try:
        download = gal_friday(
            "--exchange", "sim", "download", "--days", "0.05", "--no-progress",
            cwd=in_tmp, stdout=out,
        )  # fmt: skip
        (in_tmp / "bad.csv").write_text(BAD_CANDLES)
        backtest = gal_friday(
            "backtest", "--candles", "XRP/USD=bad.csv", "--pairs", "XRP/USD", "--strategy", "sma",
            cwd=in_tmp, stdout=out,
        )  # fmt: skip
    finally:
        os.close(out)
    assert download.returncode == 0, download.stderr
    assert (in_tmp / "data" / "XRPUSD_1.csv").is_file()  # the first pair's line went nowhere,
    assert (in_tmp / "data" / "XDGUSD_1.csv").is_file()  # and the second pair was still fetched
    assert backtest.returncode == 1  # its error line went nowhere, its exit code did not
    assert "Traceback" not in download.stderr + backtest.stderr


def test_a_headless_run_goes_on_logging_to_its_file_when_stdout_closes(in_tmp: Path) -> None:
    out = closed_pipe()
    try:
        done = gal_friday("--exchange", "sim", "--no-ui", "--duration", "3", cwd=in_tmp, stdout=out)
    finally:
        os.close(out)
    assert done.returncode == 0
    assert "Logging error" not in done.stderr and "Traceback" not in done.stderr
    events = [
        json.loads(line)["event"]
        for line in (in_tmp / "logs" / "gal-friday.jsonl").read_text().splitlines()
    ]
    assert "stdout closed; logging to the file only" in events
    assert events[-1] == "gal-friday stopped"  # the run went on to its end, every line kept
