"""Model files: a LightGBM booster (``model.txt``) beside its metadata (``model.json``).

The metadata is what makes a model safe to load: the exact feature list and order it was
trained on, the label definition, the data window, the walk-forward fold metrics, the
calibration map applied to raw probabilities, and the library versions that produced it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

MODEL_FILE = "model.txt"
META_FILE = "model.json"
FORMAT = "gal-friday-model"
VERSION = 1


class ModelError(Exception):
    """A model that cannot be used; the message says what to do about it."""


@dataclass(frozen=True)
class Calibration:
    """Monotone map from raw to calibrated probability (isotonic breakpoints), applied by
    linear interpolation; an empty map means the raw probabilities are used as they are."""

    raw: tuple[float, ...] = ()
    calibrated: tuple[float, ...] = ()

    def apply(self, p: float) -> float:
        if not self.raw:
            return p
        xs, ys = self.raw, self.calibrated
        if p <= xs[0]:
            return ys[0]
        if p >= xs[-1]:
            return ys[-1]
        lo, hi = 0, len(xs) - 1
        while hi - lo > 1:  # binary search: the map has at most a few hundred points
            mid = (lo + hi) // 2
            if xs[mid] <= p:
                lo = mid
            else:
                hi = mid
        span = xs[hi] - xs[lo]
        w = 0.0 if span == 0 else (p - xs[lo]) / span
        return ys[lo] + w * (ys[hi] - ys[lo])


@dataclass(frozen=True)
class ModelMetadata:
    """Everything needed to trust and use a trained model."""

    model_id: str
    feature_names: tuple[str, ...]
    label: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    data_window: dict[str, Any] = field(default_factory=dict)
    fold_metrics: list[dict[str, Any]] = field(default_factory=list)
    library_versions: dict[str, str] = field(default_factory=dict)
    calibration: Calibration = Calibration()
    created: str = ""
    model_sha256: str = ""  # of model.txt; empty in models saved before it was recorded

    def to_json(self) -> str:
        body = asdict(self)
        body.update(format=FORMAT, version=VERSION)
        return json.dumps(body, indent=2, sort_keys=True, default=_finite)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def save_model_files(directory: Path, model_text: str, meta: ModelMetadata) -> Path:
    """Write ``model.txt`` and ``model.json`` (metadata last, so a half-written model is never
    taken for a complete one)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = model_text.encode()
    (directory / MODEL_FILE).write_bytes(data)
    meta = replace(meta, model_sha256=hashlib.sha256(data).hexdigest())
    tmp = directory / (META_FILE + ".tmp")
    tmp.write_text(meta.to_json())
    tmp.replace(directory / META_FILE)
    return directory


def load_metadata(directory: Path) -> ModelMetadata:
    """Read and validate a model's metadata and check its model file is whole, or raise
    ModelError with a clear message."""
    meta_path = directory / META_FILE
    if not (directory / MODEL_FILE).is_file() or not meta_path.is_file():
        raise ModelError(
            f"no trained model in {directory} (expected {MODEL_FILE} and "
            f"{META_FILE}); create one with 'gal-friday train'"
        )
    try:
        body = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{meta_path} is not valid JSON: {exc}") from None
    if body.get("format") != FORMAT or body.get("version") != VERSION:
        raise ModelError(f"{meta_path} is not a gal-friday model (format/version)")
    try:
        cal = body.get("calibration") or {}
        meta = ModelMetadata(
            model_id=str(body["model_id"]),
            feature_names=tuple(str(n) for n in body["feature_names"]),
            label=dict(body["label"]),
            params=dict(body.get("params") or {}),
            data_window=dict(body.get("data_window") or {}),
            fold_metrics=list(body.get("fold_metrics") or []),
            library_versions=dict(body.get("library_versions") or {}),
            calibration=Calibration(tuple(cal.get("raw", ())), tuple(cal.get("calibrated", ()))),
            created=str(body.get("created", "")),
            model_sha256=str(body.get("model_sha256", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{meta_path} is missing or has a bad field: {exc}") from None
    check_model_file(directory / MODEL_FILE, meta)
    return meta


_DAMAGED = "; restore it or retrain with 'gal-friday train'"
_TREE_SIZES = re.compile(rb"^tree_sizes=([0-9 ]*)$", re.MULTILINE)


def check_model_file(path: Path, meta: ModelMetadata) -> None:
    """Refuse a model file LightGBM cannot read, before LightGBM reads it.

    LightGBM does not report a truncated or damaged model file: its parser aborts or
    crashes the process that loads it. So the file must match the SHA-256 recorded beside
    it at training; a model saved before that was recorded must at least be complete (its
    trees as long as its header says, its last section's end marker present)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if meta.model_sha256:
        if hashlib.sha256(data).hexdigest() != meta.model_sha256:
            raise ModelError(
                f"{path} is damaged: it does not match the SHA-256 recorded in {META_FILE} "
                f"(cut short or changed after training){_DAMAGED}"
            )
        return
    problem = _incomplete(data)
    if problem:
        raise ModelError(f"{path} is not a complete LightGBM model ({problem}){_DAMAGED}")


def _incomplete(data: bytes) -> str:
    """Why a LightGBM text model is incomplete, or "" when its structure is whole."""
    if not data.startswith(b"tree\n"):
        return "no LightGBM header"
    sizes = _TREE_SIZES.search(data)
    end = data.find(b"\nend of trees\n")
    first = data.find(b"\nTree=0\n")
    whole = data.find(b"\nend of parameters\n") > end  # the last section LightGBM writes
    if sizes is None or end < 0 or first < 0 or not whole:
        return f"cut short after {len(data)} bytes"
    if first + 1 + sum(int(n) for n in sizes.group(1).split()) != end + 1:
        return "its trees are not as long as its header says"
    return ""


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """File descriptor 2 points at /dev/null for the block (LightGBM's C++ writes there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_booster(directory: Path) -> Any:
    """The LightGBM booster of a model directory whose metadata was loaded (and its file
    checked) by :func:`load_metadata`; ModelError if LightGBM still refuses it."""
    import lightgbm  # heavy: only the processes that predict need it

    path = directory / MODEL_FILE
    try:
        with _native_stderr_muted():  # its own "[Fatal]" line: the ModelError says it once
            return lightgbm.Booster(model_file=str(path))
    except lightgbm.basic.LightGBMError as exc:
        raise ModelError(f"{path} cannot be read by LightGBM ({exc}){_DAMAGED}") from None


def check_features(meta: ModelMetadata, engine_features: tuple[str, ...]) -> tuple[int, ...]:
    """Positions of the model's features in the engine's vector, or ModelError naming every
    feature the engine does not produce. A model may use a subset, in its own order."""
    index = {name: i for i, name in enumerate(engine_features)}
    missing = [n for n in meta.feature_names if n not in index]
    if missing:
        raise ModelError(
            f"model {meta.model_id} needs features the feature engine does not produce: "
            f"{', '.join(missing)}; retrain it with 'gal-friday train' for this configuration"
        )
    if len(set(meta.feature_names)) != len(meta.feature_names):
        raise ModelError(f"model {meta.model_id} lists a feature twice")
    return tuple(index[n] for n in meta.feature_names)
