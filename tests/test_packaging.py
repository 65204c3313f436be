"""What a user installs: the package built as PyPI would get it (sdist, then a wheel from it),
installed into a fresh virtual environment, carries the cockpit's stylesheet and finds it.

Offline: the sdist and the wheel are built with this environment's setuptools
(``--no-build-isolation``), and the wheel goes into the fresh environment with ``--no-deps
--no-index``; its dependencies come from this environment through a ``.pth`` line, which
puts them after the fresh environment's own site-packages, so ``gal_friday`` is the
installed copy, never the source tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",
    ".*_cache",
    ".hypothesis",
    "data",
    "logs",
    "models",
    "reports",
    "tests",
    "snapshots",
)

IN_THE_FRESH_VENV = """
import asyncio, json, sys
from pathlib import Path

sys.path.append(sys.argv[1])  # this suite's scripted market, driving the installed package
import cockpit_script as script

import gal_friday
from gal_friday.config import Settings
from gal_friday.tui import app

async def main():
    cockpit, runner = script.scripted_app(Settings(exchange="sim"))
    async with cockpit.run_test(size=(160, 48)) as pilot:
        await runner.played.wait()
        await pilot.pause()
        header = cockpit.query_one("#header")
        return {"dock": header.styles.dock, "sheets": sorted(
            str(path) for path, _ in cockpit.stylesheet.source)}

css = Path(app.CockpitApp.CSS_PATH)
shown = asyncio.run(main())
print(json.dumps({"prefix": sys.prefix, "package": gal_friday.__file__, "css": str(css),
                  "text": css.read_text(), **shown}))
"""


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_an_installed_wheel_ships_the_stylesheet_and_its_cockpit_is_styled(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    assert not (source / "gal_friday" / "tui" / "styles").exists()  # only styles/ has it
    dist = tmp_path / "dist"
    run(
        sys.executable,
        "-c",
        f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})",
        cwd=source,
    )
    (sdist,) = dist.glob("*.tar.gz")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        dist,
        sdist,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as whl:
        assert "gal_friday/tui/styles/cockpit.tcss" in whl.namelist()

    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    purelib = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).stdout.strip()
    )
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (purelib / "zz-dependencies.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--no-compile",
        wheel,
        cwd=tmp_path,
    )

    out = json.loads(run(python, "-c", IN_THE_FRESH_VENV, HERE, cwd=tmp_path).stdout)
    installed = purelib / "gal_friday"
    assert Path(out["package"]) == installed / "__init__.py"  # the wheel, not the source
    assert Path(out["css"]) == installed / "tui" / "styles" / "cockpit.tcss"
    assert "#header" in out["text"] and "CockpitHeader" in out["text"]
    assert out["text"] == (REPO / "styles" / "cockpit.tcss").read_text()
    assert out["css"] in out["sheets"]  # Textual loaded it ...
    assert out["dock"] == "top"  # ... and applied it: cockpit.tcss docks the header on top
    version = run(fresh / "bin" / "gal-friday", "--version", cwd=tmp_path)
    assert version.stdout.startswith("gal-friday ")
