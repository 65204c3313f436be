"""Package boundaries: execution imports neither the simulator nor the Kraken adapter, and
execution, sim and kraken import each other without a cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import gal_friday

PACKAGE = Path(gal_friday.__file__).parent
WATCHED = ("execution", "sim", "kraken")


def _loaded_after(statement: str) -> list[str]:
    """Every module in ``sys.modules`` after ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_paper_venue_loads_no_simulator_and_no_http_server() -> None:
    loaded = _loaded_after("import gal_friday.execution.paper")
    assert "gal_friday.execution.paper" in loaded
    assert "gal_friday.execution.matching" in loaded
    assert [m for m in loaded if m == "gal_friday.sim" or m.startswith("gal_friday.sim.")] == []
    assert [
        m for m in loaded if m == "gal_friday.kraken" or m.startswith("gal_friday.kraken.")
    ] == []
    assert [m for m in loaded if m == "aiohttp.web" or m.startswith("aiohttp.web_")] == []


def test_backtest_venue_loads_no_simulator() -> None:
    loaded = _loaded_after("import gal_friday.backtest.venue")
    assert [m for m in loaded if m == "gal_friday.sim" or m.startswith("gal_friday.sim.")] == []
    assert [m for m in loaded if m == "aiohttp.web" or m.startswith("aiohttp.web_")] == []


def _package_imports() -> dict[str, set[str]]:
    """For each watched package, the other watched packages its modules import (at any
    depth in the module, so deferred imports count too)."""
    edges: dict[str, set[str]] = {p: set() for p in WATCHED}
    for pkg in WATCHED:
        for path in sorted((PACKAGE / pkg).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    parts = name.split(".")
                    if (
                        len(parts) > 1
                        and parts[0] == "gal_friday"
                        and parts[1] in WATCHED
                        and parts[1] != pkg
                    ):
                        edges[pkg].add(parts[1])
    return edges


def test_execution_imports_neither_sim_nor_kraken() -> None:
    assert _package_imports()["execution"] == set()


def test_no_cycle_between_execution_sim_and_kraken() -> None:
    edges = _package_imports()

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in edges[start]
        )

    assert [p for p in WATCHED if reaches(p, p)] == [], edges
