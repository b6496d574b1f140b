"""OperatorConfig from the environment: defaults, parsing, refusals, retry backoff."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chatmemory_operator.config import ENV_VARS, MAIN_ONLY, ConfigError, OperatorConfig

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_watch_every_namespace_with_production_intervals() -> None:
    cfg = OperatorConfig.from_env({})
    assert cfg.namespaces == ()
    assert cfg.metrics_port == 9090
    assert cfg.liveness == "http://0.0.0.0:8080/healthz"
    assert 30 <= cfg.drift_interval <= 120


def test_environment_overrides_each_setting() -> None:
    cfg = OperatorConfig.from_env(
        {
            "CHATMEMORY_NAMESPACES": " a, b ,,",
            "CHATMEMORY_METRICS_PORT": "9999",
            "CHATMEMORY_DRIFT_INTERVAL": "2.5",
            "CHATMEMORY_RETRY_DELAY": "1",
            "CHATMEMORY_RETRY_MAX_DELAY": "8",
            "CHATMEMORY_LIVENESS": "off",
            "CHATMEMORY_WORKERS": "16",
        }
    )
    assert cfg.namespaces == ("a", "b")
    assert cfg.metrics_port == 9999
    assert cfg.drift_interval == 2.5
    assert cfg.liveness == "off"
    assert (cfg.retry_delay, cfg.retry_max_delay) == (1.0, 8.0)
    assert cfg.workers == 16


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CHATMEMORY_METRICS_PORT", "http"),
        ("CHATMEMORY_METRICS_PORT", "70000"),
        ("CHATMEMORY_DRIFT_INTERVAL", "0"),
        ("CHATMEMORY_RETRY_DELAY", "-1"),
        ("CHATMEMORY_STORE_INTERVAL", "soon"),
        ("CHATMEMORY_WORKERS", "0"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        OperatorConfig.from_env({key: value})


@pytest.mark.parametrize(
    ("value", "verbose"),
    [
        ("", False),
        ("0", False),
        ("false", False),
        ("off", False),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
    ],
)
def test_verbose_reads_the_usual_boolean_spellings(value: str, verbose: bool) -> None:
    assert OperatorConfig.from_env({"CHATMEMORY_VERBOSE": value}).verbose is verbose
    assert OperatorConfig.from_env({}).verbose is False


def test_an_unreadable_verbose_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="CHATMEMORY_VERBOSE"):
        OperatorConfig.from_env({"CHATMEMORY_VERBOSE": "loud"})


def test_every_setting_is_documented_in_the_readme_and_the_main_only_ones_say_so() -> None:
    """The README's Settings list names every variable the operator reads and no other; the two
    that ``kopf run`` (the chart, the image) ignores are marked as ``python -m`` only."""
    readme = (ROOT / "README.md").read_text()
    (settings,) = [p.split("\n\n")[0] for p in readme.split("\n- ") if p.startswith("**Settings**")]
    named = set(re.findall(r"`(CHATMEMORY_[A-Z_]+)`", settings))
    assert named == set(ENV_VARS), named ^ set(ENV_VARS)
    assert set(ENV_VARS) >= MAIN_ONLY
    for key in MAIN_ONLY:
        assert "python -m chatmemory_operator only" in ENV_VARS[key], key


def test_a_cap_below_the_first_delay_is_refused() -> None:
    with pytest.raises(ConfigError, match="RETRY_MAX_DELAY"):
        OperatorConfig.from_env({"CHATMEMORY_RETRY_DELAY": "10", "CHATMEMORY_RETRY_MAX_DELAY": "5"})


def test_retry_delay_doubles_and_is_capped() -> None:
    cfg = OperatorConfig(retry_delay=10, retry_max_delay=60)
    assert [cfg.retry_backoff(r) for r in range(5)] == [10, 20, 40, 60, 60]
    assert cfg.retry_backoff(10_000) == 60
