"""Folders the product writes into are made one level at a time: a missing parent (a disk
that is not mounted) is one clear error naming it, never silently created."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gal_friday.folders import FolderError, check_writable, make_folder, prepare_data_folder

PRODUCT = Path(__file__).resolve().parent.parent / "gal_friday"


def test_the_last_level_is_created_and_an_existing_folder_is_kept(tmp_path: Path) -> None:
    assert make_folder(tmp_path / "data", "data folder").is_dir()
    (tmp_path / "data" / "keep").write_text("x")
    assert make_folder(tmp_path / "data", "data folder") == tmp_path / "data"
    assert (tmp_path / "data" / "keep").read_text() == "x"


def test_a_missing_parent_is_named_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "mnt" / "disk" / "data"
    with pytest.raises(FolderError) as caught:
        make_folder(target, "data folder")
    assert str(caught.value) == (
        f"cannot create the data folder {target}: its parent folder {target.parent} does not "
        "exist (a disk not mounted, or a mistyped path?); create it first"
    )
    assert not (tmp_path / "mnt").exists()


def test_a_file_where_the_folder_should_be_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(FolderError, match=f"the data folder {tmp_path / 'data'} is a file"):
        prepare_data_folder(tmp_path / "data")


def test_the_write_check_leaves_nothing_behind(tmp_path: Path) -> None:
    check_writable(tmp_path, "data folder", "everything")
    assert list(tmp_path.iterdir()) == []


async def test_a_store_whose_disk_is_away_is_unavailable_naming_the_missing_parent(
    tmp_path: Path,
) -> None:
    """During a run the audit store treats it as its disk being away (spill and retry), as
    for any other OSError, and never makes the folder's parents itself."""
    from gal_friday.store import StoreUnavailable
    from gal_friday.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "mnt" / "data" / "audit.sqlite3")
    with pytest.raises(StoreUnavailable, match=f"parent folder {tmp_path / 'mnt'} does not"):
        await store.connect()
    assert not (tmp_path / "mnt").exists()


def test_only_output_folders_the_user_names_are_made_with_their_parents() -> None:
    """Every folder under the data folder (store, spill, journals, socket, nonce, candles)
    and the log, recording and feature-table folders go through make_folder. Model and
    report folders keep ``mkdir(parents=True)``: their defaults (``models/default``,
    ``reports/backtest-...``) are two levels under the working directory."""
    found = sorted(
        str(path.relative_to(PRODUCT))
        for path in PRODUCT.rglob("*.py")
        if re.search(r"mkdir\([^)]*parents=True", path.read_text())
    )
    assert found == ["backtest/report.py", "prediction/model.py"]
