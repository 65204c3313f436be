"""CLIService: the ``gal-friday`` command.

``gal-friday [--no-ui] [options]`` runs the bot; subcommands run its tools. Options shared by
every command override the configuration file and the environment. A user mistake ends with
one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gal_friday import __version__
from gal_friday.backtest.options import add_parser as add_backtest
from gal_friday.config import ConfigError, Settings, load_settings, merge_overrides
from gal_friday.folders import FolderError, prepare_data_folder
from gal_friday.logs import quiet_stdout, setup_logging, stdout_closed

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("gal_friday.cli")


class UsageError(Exception):
    """A bad flag value; reported as one line with exit code 2."""


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before or after any subcommand (SUPPRESS keeps unset ones unset)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="configuration file (default: ./config.toml if present)",
    )
    common.add_argument(
        "--exchange",
        choices=["kraken", "sim"],
        help="kraken: live Kraken; sim: the built-in simulator (offline)",
    )
    common.add_argument(
        "--mode",
        choices=["paper", "live"],
        help="paper: simulated fills (default); live: real orders (needs keys for Kraken)",
    )
    common.add_argument("--pairs", metavar="A/B,C/D", help="pairs to trade, comma-separated")
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    common.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set kraken.book_depth=25 (repeatable)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="gal-friday",
        parents=[common],
        description="Automated trading bot for XRP/USD and DOGE/USD on Kraken.",
    )
    parser.add_argument("--version", action="version", version=f"gal-friday {__version__}")
    parser.add_argument(
        "--no-ui",
        action="store_true",
        default=argparse.SUPPRESS,
        help="run headless: JSON logs and a periodic status line",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help="stop by itself after this many seconds",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the bot (the default command)")
    run.add_argument("--no-ui", action="store_true", default=argparse.SUPPRESS)
    run.add_argument("--duration", type=float, metavar="SECONDS", default=argparse.SUPPRESS)

    sim = sub.add_parser(
        "sim-exchange", parents=[common], help="serve the Kraken-protocol simulator on loopback"
    )
    sim.add_argument("--host", default=argparse.SUPPRESS)
    sim.add_argument("--port", type=int, default=argparse.SUPPRESS)
    sim.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    sim.add_argument(
        "--replay",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="replay a file made by 'gal-friday record' instead of synthetic data",
    )
    sim.add_argument(
        "--speed",
        type=float,
        default=argparse.SUPPRESS,
        help="replay speed factor (0 = as fast as possible)",
    )
    sim.add_argument(
        "--rate",
        type=float,
        default=argparse.SUPPRESS,
        help="synthetic market: book messages per second per pair",
    )
    sim.add_argument(
        "--loop", action="store_true", default=False, help="start the replay again when it ends"
    )
    sim.add_argument("--duration", type=float, metavar="SECONDS", default=argparse.SUPPRESS)

    rec = sub.add_parser(
        "record",
        parents=[common],
        help="record raw public Kraken messages to a replayable .jsonl.gz",
    )
    rec.add_argument("--out", type=Path, required=True, metavar="FILE")
    rec.add_argument("--duration", type=float, metavar="SECONDS", default=argparse.SUPPRESS)

    dl = sub.add_parser(
        "download",
        parents=[common],
        help="download 1-min candle history (or import Kraken's CSV files)",
    )
    dl.add_argument("--pair", help="pair to download (default: every configured pair)")
    dl.add_argument("--days", type=float, help="days of history (default: training.history_days)")
    dl.add_argument(
        "--out", type=Path, metavar="FILE", help="candle file (default: data/ALTNAME_1.csv)"
    )
    dl.add_argument(
        "--import",
        dest="import_file",
        type=Path,
        metavar="FILE",
        help="import a Kraken OHLCVT or trades CSV instead of downloading",
    )
    dl.add_argument(
        "--kind",
        choices=["auto", "ohlcvt", "trades"],
        default="auto",
        help="what --import FILE holds (default: detect)",
    )
    dl.add_argument("--no-progress", action="store_true")

    tr = sub.add_parser("train", parents=[common], help="train and validate a LightGBM model")
    tr.add_argument(
        "--candles",
        type=Path,
        metavar="FILE",
        help="candle file (default: download training.history_days for the pair)",
    )
    tr.add_argument("--pair", help="pair whose history to use (default: the first configured)")
    tr.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="model directory (default: the first of prediction.models)",
    )
    tr.add_argument("--model-id", help="model id (default: lgbm-<UTC time>)")
    tr.add_argument("--no-progress", action="store_true")

    feat = sub.add_parser(
        "features", parents=[common], help="write the batch feature table of a candle file as CSV"
    )
    feat.add_argument("--candles", type=Path, required=True, metavar="FILE")
    feat.add_argument("--out", type=Path, required=True, metavar="FILE")

    show = sub.add_parser(
        "config", parents=[common], help="print the effective configuration (secrets masked)"
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    replay = sub.add_parser(
        "replay", parents=[common], help="re-run a recorded session's decisions and compare them"
    )
    replay.add_argument(
        "session",
        type=Path,
        metavar="SESSION",
        help="a journal from <data_dir>/sessions/ (or its path)",
    )
    add_backtest(sub, common)
    _add_control_commands(sub, common)
    return parser


def _add_control_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """halt / resume / flatten / status: steer the running instance over its control socket."""
    halt = sub.add_parser("halt", parents=[common], help="HALT the running instance now")
    halt.add_argument("--reason", default="", help="why (shown in the log and the cockpit)")
    reduce = sub.add_parser(
        "reduce", parents=[common], help="REDUCING: no new entries, positions kept, exits allowed"
    )
    reduce.add_argument("--reason", default="", help="why (shown in the log and the cockpit)")
    for name, text in (
        ("resume", "resume trading after a HALT (asks first)"),
        ("flatten", "close every position at market (asks first)"),
    ):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    status = sub.add_parser("status", parents=[common], help="state of the running instance")
    status.add_argument("--json", action="store_true", help="machine-readable output")


def _parse_value(text: str) -> Any:
    """``--set`` values: TOML-ish literals (numbers, booleans, lists) or plain strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def settings_from_args(args: argparse.Namespace) -> Settings:
    items: list[tuple[str, Any]] = []
    for item in getattr(args, "set", None) or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--set needs KEY=VALUE, got {item!r}")
        items.append((key.strip(), _parse_value(value.strip())))
    if hasattr(args, "exchange"):
        items.append(("exchange", args.exchange))
    if hasattr(args, "mode"):
        items.append(("mode", args.mode))
    if hasattr(args, "pairs"):
        items.append(("pairs", [p.strip() for p in args.pairs.split(",") if p.strip()]))
    if hasattr(args, "log_level"):
        items.append(("logging.level", args.log_level))
    for flag, key in (
        ("host", "sim.host"),
        ("port", "sim.port"),
        ("seed", "sim.seed"),
        ("replay", "sim.replay"),
        ("speed", "sim.speed"),
        ("rate", "sim.messages_per_second"),
    ):
        if getattr(args, flag, None) is not None:  # None: not given
            items.append((key, getattr(args, flag)))
    return load_settings(getattr(args, "config", None), merge_overrides(*items))


def _secrets(settings: Settings) -> list[str]:
    creds = settings.credentials
    return [s.get_secret_value() for s in (creds.api_key, creds.api_secret) if s is not None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A reader that stops reading (``gal-friday config | head``) ends the
    output quietly with exit 0, as ``head`` expects; no traceback."""
    try:
        code = _main(argv)
    except BrokenPipeError as exc:
        if not stdout_closed():  # a socket's broken pipe: a failure, not the reader leaving
            print(f"gal-friday: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        code = EXIT_OK
    try:
        sys.stdout.flush()  # what is still buffered; the command's exit code stands
    except BrokenPipeError:
        quiet_stdout()
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    try:
        settings = settings_from_args(args)
    except (ConfigError, UsageError) as exc:
        print(f"gal-friday: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "config":
        return _show_config(settings, as_json=args.json)
    try:
        _check_sim_pairs(settings, command, args)
    except UsageError as exc:
        print(f"gal-friday: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command in ("halt", "reduce", "resume", "flatten", "status"):
        from gal_friday.control import ask_on_terminal, run_command

        return run_command(
            settings,
            command,
            reason=getattr(args, "reason", ""),
            yes=getattr(args, "yes", False),
            as_json=getattr(args, "json", False),
            ask=ask_on_terminal,
        )
    try:
        setup_logging(settings.logging, secrets=_secrets(settings))
        if _writes_data_folder(command, args):
            prepare_data_folder(Path(settings.paths.data_dir))
    except OSError as exc:
        print(f"gal-friday: {_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    duration = getattr(args, "duration", None)
    try:
        if command == "sim-exchange":
            return _run(_sim_exchange(settings, duration, loop=args.loop))
        if command == "record":
            return _run(_record(settings, args.out, duration))
        if command == "download":
            return _run(_download(settings, args))
        if command == "train":
            return _run(_train(settings, args))
        if command == "features":
            return _features(settings, args)
        if command == "replay":
            return _replay(settings, args.session)
        if command == "backtest":
            from gal_friday.backtest import cli as backtest_cli

            return asyncio.run(backtest_cli.run(settings, args))
        if not getattr(args, "no_ui", False):
            return _cockpit(settings, duration)
        from gal_friday.headless import run_headless

        return _run(run_headless(settings, duration_s=duration))
    except FatalError as exc:
        print(f"gal-friday: {exc}", file=sys.stderr)
        return EXIT_FAILURE


_SIM_COMMANDS = ("run", "record", "download", "train")  # they start it with --exchange sim


def _writes_data_folder(command: str, args: argparse.Namespace) -> bool:
    """Commands that write into paths.data_dir (a download or training run that is told
    where its candles are does not)."""
    if command == "download":
        return args.out is None
    if command == "train":
        return args.candles is None
    return command in ("run", "record")


def _os_error(exc: OSError) -> str:
    """One line for a failed write: our own message, or what failed on which path."""
    if isinstance(exc, FolderError):
        return str(exc)
    if exc.filename:
        return f"cannot write {exc.filename}: {exc.strerror or exc}"
    return str(exc.strerror or exc)


def _check_sim_pairs(settings: Settings, command: str, args: argparse.Namespace) -> None:
    """Before anything starts: every pair a command would ask the simulator for is one it
    serves (a recording replayed instead brings its own pairs)."""
    uses_sim = command == "sim-exchange" or (
        settings.exchange == "sim"
        and command in _SIM_COMMANDS
        and not (command == "train" and args.candles)
    )
    if not uses_sim or settings.sim.replay:
        return
    from gal_friday.sim.instruments import INSTRUMENTS

    pairs = [*settings.pairs, *([args.pair] if getattr(args, "pair", None) else [])]
    unknown = [pair for pair in dict.fromkeys(pairs) if pair not in INSTRUMENTS]
    if unknown:
        raise UsageError(
            f"the simulator has no pair {', '.join(unknown)}; it serves {', '.join(INSTRUMENTS)}"
        )


def _cockpit(settings: Settings, duration: float | None) -> int:
    """The Textual cockpit; logs go to the file only (stdout is the screen)."""
    from gal_friday.tui.app import run_tui

    quiet = settings.logging.model_copy(update={"stdout": False})
    setup_logging(quiet, secrets=_secrets(settings))
    return _run(run_tui(settings, duration_s=duration))


def _replay(settings: Settings, session: Path) -> int:
    """Replay one session journal; exit 0 only when every decision was reproduced."""
    from gal_friday.replay import replay_session
    from gal_friday.session import SessionError

    path = session
    if not path.exists() and (Path(settings.paths.data_dir) / "sessions" / path).exists():
        path = Path(settings.paths.data_dir) / "sessions" / path
    try:
        result = asyncio.run(replay_session(path))
    except (SessionError, OSError) as exc:
        raise FatalError(str(exc)) from None
    counts = ", ".join(f"{n} {kind}" for kind, n in result.compared.items())
    _emit(f"replayed {result.session}: {result.events} events; compared {counts}")
    for line in result.mismatches:
        _emit(f"MISMATCH {line}")
    if result.truncated:
        tail = ", ".join(f"{n} {kind}" for kind, n in result.unchecked.items()) or "none"
        _emit(
            f"the journal ends early (the run did not stop cleanly): everything recorded "
            f"was compared; decisions the replay made past its end, unchecked: {tail}"
        )
    _emit("reproduced exactly" if result.ok else "NOT reproduced")
    return EXIT_OK if result.ok else EXIT_FAILURE


def _emit(text: str) -> None:
    """Print a line of a command's output. When the reader has gone (``| head``) the rest
    goes nowhere and the command carries on to its end and its own exit code (a replay
    that differs still exits 1, a download still fetches every pair)."""
    try:
        print(text)
    except BrokenPipeError:
        if not stdout_closed():
            raise
        quiet_stdout()


class FatalError(Exception):
    """A run ended on a problem that retrying cannot fix; the message is for the user."""


def _run(coro: Any) -> int:
    from gal_friday.candles import CandleFileError
    from gal_friday.control import ControlError
    from gal_friday.download import DownloadError
    from gal_friday.engine import LiveModeError
    from gal_friday.execution.venue import VenueAuthError
    from gal_friday.kraken.recorder import RecordingError
    from gal_friday.kraken.ws import FatalFeedError
    from gal_friday.prediction.model import ModelError
    from gal_friday.prediction.training import ModelRejected, TooFewRows
    from gal_friday.store.base import StoreCorrupt

    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        return EXIT_OK
    except (
        FatalFeedError,
        RecordingError,
        ModelError,
        ModelRejected,
        TooFewRows,
        DownloadError,
        CandleFileError,
        LiveModeError,
        VenueAuthError,
        ControlError,
        StoreCorrupt,
    ) as exc:
        raise FatalError(str(exc)) from None
    except BrokenPipeError:
        if stdout_closed():
            raise  # the reader of stdout went away: main ends quietly
        raise FatalError("connection closed by the other end (broken pipe)") from None
    except OSError as exc:
        raise FatalError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None
    return EXIT_OK


async def _sim_exchange(settings: Settings, duration: float | None, *, loop: bool) -> None:
    from gal_friday.sim.server import run_sim_exchange

    task = asyncio.ensure_future(run_sim_exchange(settings.sim, settings.pairs, loop=loop))
    await _until_signal(task, duration)


async def _record(settings: Settings, out: Path, duration: float | None) -> None:
    from gal_friday.headless import run_headless
    from gal_friday.kraken.recorder import Recorder

    source = "sim" if settings.exchange == "sim" else settings.kraken.ws_public_url
    recorder = Recorder(out, source=source, pairs=settings.pairs, depth=settings.kraken.book_depth)
    try:
        await run_headless(settings, duration_s=duration, raw_sink=recorder.write, predict=False)
    finally:
        recorder.close()
        log.info("recording closed", extra={"path": str(out), "frames": recorder.frames})


async def _download(settings: Settings, args: argparse.Namespace) -> None:
    from gal_friday.download import default_output, download_candles, import_history
    from gal_friday.engine import open_venue
    from gal_friday.kraken.rest import KrakenPublicRest

    pairs = [args.pair] if args.pair else list(settings.pairs)
    data_dir = Path(settings.paths.data_dir)
    if args.import_file:
        imported = import_history(
            args.import_file, pairs[0], data_dir, kind=args.kind, out=args.out
        )
        _emit(
            f"imported {imported.candles} {imported.interval_min}-min candles into {imported.out}"
        )
        return
    days = args.days or settings.training.history_days
    async with open_venue(settings) as venue:
        pause = 0.0 if venue.name == "sim" else 1.0
        async with KrakenPublicRest(venue.rest_url, settings.kraken.request_timeout_s) as rest:
            for pair in pairs:
                out = args.out or default_output(data_dir, pair)
                try:
                    result = await download_candles(
                        rest, pair, days, out, pause_s=pause, progress=not args.no_progress
                    )
                except asyncio.CancelledError:
                    print("interrupted; run the same command again to continue", file=sys.stderr)
                    raise
                _emit(
                    f"{pair}: {result.candles} candles in {result.out}"
                    + (" (already up to date)" if result.up_to_date else "")
                )


async def _train(settings: Settings, args: argparse.Namespace) -> None:
    from gal_friday.candles import read_candles
    from gal_friday.engine import open_venue
    from gal_friday.prediction.pipeline import fetch_history, train_from_candles
    from gal_friday.prediction.training import summary_line

    pair = args.pair or settings.pairs[0]
    path = args.candles
    if path is None:
        async with open_venue(settings) as venue:
            pause = 0.0 if venue.name == "sim" else 1.0
            path = await fetch_history(
                settings,
                venue.rest_url,
                pair,
                settings.training.history_days,
                pause_s=pause,
                progress=not args.no_progress,
            )
    out = args.out or Path(settings.prediction.models[0])
    result = await asyncio.to_thread(
        train_from_candles,
        settings,
        read_candles(path),
        out,
        model_id=args.model_id,
        progress=not args.no_progress,
    )
    _emit(
        f"model {result.meta.model_id} accepted and saved to {out}: " + summary_line(result.summary)
    )


def _features(settings: Settings, args: argparse.Namespace) -> int:
    from gal_friday.candles import CandleFileError
    from gal_friday.features import write_feature_table

    try:
        rows = write_feature_table(args.candles, args.out, settings.features)
    except CandleFileError as exc:
        print(f"gal-friday: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # the candles were read: it is the table that cannot be written
        why = f"cannot write the feature table {args.out}: {exc.strerror or exc}"
        print(f"gal-friday: {exc if isinstance(exc, FolderError) else why}", file=sys.stderr)
        return EXIT_FAILURE
    _emit(f"wrote {rows} rows to {args.out}")
    return EXIT_OK


async def _until_signal(task: asyncio.Future[Any], duration: float | None) -> None:
    """Wait for ``task``, stopping it on SIGINT/SIGTERM or after ``duration`` seconds."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    if duration:
        loop.call_later(duration, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise


def _show_config(settings: Settings, *, as_json: bool) -> int:
    data = settings.model_dump(mode="json")
    creds = settings.credentials
    data["credentials"] = {
        "KRAKEN_API_KEY": "set (hidden)" if creds.api_key else "not set",
        "KRAKEN_API_SECRET": "set (hidden)" if creds.api_secret else "not set",
    }
    if as_json:
        _emit(json.dumps(data, indent=2))
    else:
        _print_tree(data, "")
    return EXIT_OK


def _print_tree(data: dict[str, Any], prefix: str) -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            _print_tree(value, f"{prefix}{key}.")
        else:
            _emit(f"{prefix}{key} = {json.dumps(value)}")
