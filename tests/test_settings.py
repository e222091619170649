from __future__ import annotations

import argparse
import os
from dataclasses import fields
from typing import Any

import pytest

import gateway.__main__ as gateway_main
from gateway.__main__ import build_parser
from gateway.settings import ENV_PREFIX, Settings


def test_defaults_are_the_embedded_gateway() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert settings.check_registered_at_institution
    assert settings.emergency_covers_terminated


def test_environment_variables_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "ELIG_REDIS_URL": "redis://example:1/0",
            "ELIG_PORT": "6000",
            "ELIG_EMERGENCY_COVERS_TERMINATED": "false",
            "ELIG_MAX_LINES_PER_CLAIM": "20",
            "ELIG_POLL_INTERVAL_S": "0.5",
        }
    )
    assert settings.redis_url == "redis://example:1/0"
    assert settings.port == 6000
    assert settings.emergency_covers_terminated is False
    assert settings.max_lines_per_claim == 20
    assert settings.poll_interval_s == 0.5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELIG_PORT": "http"}, "ELIG_PORT"),
        ({"ELIG_EMERGENCY_COVERS_TERMINATED": "maybe"}, "ELIG_EMERGENCY_COVERS_TERMINATED"),
        ({"ELIG_PORT": "70000"}, "port"),
        ({"ELIG_MAX_LINES_PER_CLAIM": "0"}, "max_lines_per_claim"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)


def test_flags_override_the_environment() -> None:
    settings = Settings.from_env({"ELIG_PORT": "6000"}).with_overrides(port=7000, prefix=None)
    assert settings.port == 7000
    assert settings.prefix == "elig"


def test_operations_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ELIG_METRICS_PORT": "9464",
            "ELIG_TLS_CERT_FILE": "/etc/elig/gateway.crt",
            "ELIG_TLS_KEY_FILE": "/etc/elig/gateway.key",
            "ELIG_TLS_CLIENT_CA_FILE": "/etc/elig/clients.crt",
            "ELIG_MAX_CONCURRENT_RPCS": "50",
            "ELIG_SHUTDOWN_GRACE_S": "2.5",
        }
    )
    assert settings.metrics_port == 9464
    assert settings.tls_cert_file == "/etc/elig/gateway.crt"
    assert settings.tls_client_ca_file == "/etc/elig/clients.crt"
    assert settings.max_concurrent_rpcs == 50
    assert settings.shutdown_grace_s == 2.5
    assert Settings.from_env({}).metrics_port is None  # off unless asked for
    with pytest.raises(ValueError, match="max_concurrent_rpcs"):
        Settings.from_env({"ELIG_MAX_CONCURRENT_RPCS": "0"})


# Flags of `python -m gateway` that are not settings: they steer this run of the
# command (the embedded demo), not a gateway's configuration.
NOT_SETTINGS = {"help", "version", "no_demo", "exit_after_demo", "sample_practitioners"}


def _sample(action: argparse.Action, default: Any) -> tuple[list[str], str, Any]:
    """For one flag: its arguments, its environment value and the Settings
    value both mean, different from the default."""
    flag = action.option_strings[-1] if action.nargs == 0 else action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        value = not default
        flag = action.option_strings[0] if value else action.option_strings[1]
        return [flag], str(value).lower(), value
    if action.nargs == 0:  # store_true
        return [flag], "true", True
    if action.choices is not None:
        value = next(c for c in action.choices if c != default)
        return [flag, str(value)], str(value), value
    sample: Any
    if action.type is int:
        sample = default + 1 if isinstance(default, int) else 1234
    elif action.type is float:
        sample = default + 1.5 if isinstance(default, float) else 2.5
    else:
        sample = f"sample-{action.dest}"
    return [flag, str(sample)], str(sample), sample


def gateway_flags() -> list[argparse.Action]:
    """Every option of `python -m gateway --help`."""
    parser = build_parser(Settings())
    return [a for a in parser._actions if a.option_strings]


def test_every_gateway_flag_is_a_setting_with_an_elig_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each flag of `python -m gateway --help` names a Settings field, the
    field's ELIG_* variable sets it, and the flag reaches Settings too."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    names = {f.name for f in fields(Settings)}
    defaults = Settings()
    argv: list[str] = []
    env: dict[str, str] = {}
    want: dict[str, Any] = {}
    for action in gateway_flags():
        if action.dest in NOT_SETTINGS:
            assert action.dest not in names, f"{action.dest} is a setting: drop the exception"
            continue
        assert action.dest in names, f"{action.option_strings}: no Settings field {action.dest}"
        args, raw, value = _sample(action, getattr(defaults, action.dest))
        argv += args
        env[ENV_PREFIX + action.dest.upper()] = raw
        want[action.dest] = value
    assert "load_timeout_s" in want  # issue 13: it was a flag without a variable

    from_env = Settings.from_env(env)
    assert {name: getattr(from_env, name) for name in want} == want

    seen: list[Settings] = []

    def serve(settings: Settings, *_: Any) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(gateway_main, "_serve", serve)
    monkeypatch.setattr(gateway_main, "configure_logging", lambda level: None)
    monkeypatch.setattr("gateway.ops.workers.run_workers", serve)
    assert gateway_main.main(argv) == 0
    (from_flags,) = seen
    assert {name: getattr(from_flags, name) for name in want} == want


def test_load_timeout_comes_from_the_environment_and_must_be_positive() -> None:
    assert Settings.from_env({}).load_timeout_s is None
    assert Settings.from_env({"ELIG_LOAD_TIMEOUT_S": "2.5"}).load_timeout_s == 2.5
    with pytest.raises(ValueError, match="load_timeout_s"):
        Settings.from_env({"ELIG_LOAD_TIMEOUT_S": "0"})
