"""ConfigurationManager: precedence, documented defaults, clear errors, hidden secrets."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gal_friday.config import ConfigError, Settings, load_settings, merge_overrides
from tests.conftest import REPO


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_any_file(in_tmp: Path) -> None:
    settings = load_settings()
    assert settings.pairs == ("XRP/USD", "DOGE/USD")
    assert settings.kraken.ws_public_url == "wss://ws.kraken.com/v2"


def test_file_then_env_then_cli_each_override_the_one_before(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(
        in_tmp / "c.toml",
        '[kraken]\nbook_depth = 25\nws_public_url = "ws://file"\nrest_url = "http://file"\n',
    )
    monkeypatch.setenv("GAL_FRIDAY_KRAKEN__WS_PUBLIC_URL", "ws://env")
    monkeypatch.setenv("GAL_FRIDAY_KRAKEN__REST_URL", "http://env")
    settings = load_settings(cfg, merge_overrides(("kraken.rest_url", "http://cli")))
    assert settings.kraken.book_depth == 25  # file, untouched by env or CLI
    assert settings.kraken.ws_public_url == "ws://env"  # env beats file
    assert settings.kraken.rest_url == "http://cli"  # CLI beats env


def test_config_toml_documents_every_setting_with_its_default() -> None:
    """The shipped config.toml holds exactly the built-in defaults, and every key."""
    data = tomllib.loads((REPO / "config.toml").read_text())
    assert Settings(**data).model_dump() == Settings().model_dump()

    def keys(d: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out |= keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    assert keys(data) == keys(Settings().model_dump())


def test_every_setting_in_config_toml_has_a_comment() -> None:
    lines = (REPO / "config.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            above = lines[i - 1].strip()
            assert above.startswith("#") or "=" in above, f"undocumented setting: {line}"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[kraken]\nbook_depht = 10\n", "kraken.book_depht: unknown setting"),
        ("[kraken]\nbook_depth = 7\n", "kraken.book_depth: Input should be 10, 25"),
        ('[risk]\nmax_daily_drawdown_pct = "lots"\n', "risk.max_daily_drawdown_pct"),
        ('pairs = ["XRPUSD"]\n', "'XRPUSD' is not a pair"),
        ("[kraken\n", "is not valid TOML"),
        (
            "[training]\nmin_brier_skill = -0.01\n",
            "training.min_brier_skill: Input should be greater than or equal to 0",
        ),
        (
            "[training]\nmin_brier_skill = 2\n",  # percent for a fraction: no model passes
            "training.min_brier_skill: Input should be less than or equal to 0.5",
        ),
        ("[training]\nfolds = 1\n", "training.folds: Input should be greater than or equal to 2"),
    ],
)
def test_bad_config_is_one_clear_line_naming_the_field(
    in_tmp: Path, toml: str, needle: str
) -> None:
    cfg = write(in_tmp / "bad.toml", toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_an_older_training_section_still_loads_and_the_skill_floor_can_be_turned_off(
    in_tmp: Path,
) -> None:
    old = write(in_tmp / "old.toml", "[training]\nmin_auc = 0.52\nmax_brier = 0.25\n")
    training = load_settings(old).training
    assert training.max_brier == 0.25 and training.min_brier_skill == 0.002
    off = write(in_tmp / "off.toml", '[training]\nmin_brier_skill = "off"\n')
    assert load_settings(off).training.min_brier_skill is None


def test_missing_explicit_file_is_an_error(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: nope\.toml"):
        load_settings(Path("nope.toml"))


def test_unknown_environment_variable_is_an_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAL_FRIDAY_KRAKEN__BOOK_DEPHT", "25")
    with pytest.raises(ConfigError, match=r"kraken\.book_depht: unknown setting"):
        load_settings()


def test_credentials_come_only_from_environment_and_never_show(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRAKEN_API_KEY", "key-abcdef123")
    monkeypatch.setenv("KRAKEN_API_SECRET", "c2VjcmV0LXNob3VsZC1uZXZlci1zaG93")
    settings = load_settings()
    assert settings.credentials.present
    assert settings.credentials.api_key is not None
    assert settings.credentials.api_key.get_secret_value() == "key-abcdef123"
    for text in (
        repr(settings),
        str(settings),
        repr(settings.credentials),
        str(settings.model_dump()),
    ):
        assert "key-abcdef123" not in text
        assert "c2VjcmV0LXNob3VsZC1uZXZlci1zaG93" not in text


def test_credentials_in_the_config_file_are_refused(in_tmp: Path) -> None:
    cfg = write(in_tmp / "c.toml", 'api_key = "oops"\n')
    with pytest.raises(ConfigError, match="api_key: unknown setting"):
        load_settings(cfg)


def test_secret_that_is_not_base64_is_a_clear_error(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRAKEN_API_SECRET", "not base64!!")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "KRAKEN_API_SECRET is not valid base64" in str(err.value)
    assert "not base64!!" not in str(err.value)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gal_friday", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_bad_config_exits_2_with_one_line_and_no_traceback(in_tmp: Path) -> None:
    write(in_tmp / "bad.toml", '[kraken]\nbook_depth = "deep"\n')
    result = run_cli("--config", "bad.toml", "--no-ui", cwd=in_tmp)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "kraken.book_depth" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_flags_override_environment(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAL_FRIDAY_EXCHANGE", "kraken")
    monkeypatch.setenv("KRAKEN_API_KEY", "key-xyz-777")
    result = run_cli("--exchange", "sim", "--set", "kraken.book_depth=25", "config", cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    assert 'exchange = "sim"' in result.stdout
    assert "kraken.book_depth = 25" in result.stdout
    assert "key-xyz-777" not in result.stdout
    assert 'KRAKEN_API_KEY = "set (hidden)"' in result.stdout


def test_cli_bad_set_syntax_exits_2(in_tmp: Path) -> None:
    result = run_cli("--set", "nonsense", "config", cwd=in_tmp)
    assert result.returncode == 2
    assert "--set needs KEY=VALUE" in result.stderr
