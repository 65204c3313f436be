"""The one build step pyproject.toml cannot say: ship the cockpit's stylesheets.

They live in ``styles/`` (the design card's layout). A built package (wheel, or a plain
``pip install .``) gets a copy of every ``styles/*.tcss`` beside the app module, in
``gal_friday/tui/styles/``, where an installed ``gal-friday`` finds them. An editable install
reads ``styles/`` in the source tree instead, so edits show at the next start. Everything
else is configured in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithStyles(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # gal_friday/tui/app.py falls back to the source tree's styles/
        sheets = sorted((HERE / "styles").glob("*.tcss"))
        if not sheets:
            raise SystemExit("styles/*.tcss not found: the cockpit would be unstyled")
        target = Path(self.build_lib, "gal_friday", "tui", "styles")
        self.mkpath(str(target))
        for sheet in sheets:
            self.copy_file(str(sheet), str(target / sheet.name))


setup(cmdclass={"build_py": BuildPyWithStyles})
