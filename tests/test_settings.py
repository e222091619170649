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
# Values the all-flags test below gives where "sample-<name>" would not do.
SAMPLES = {"redis_sentinel": "127.0.0.1:26379,127.0.0.1:26380", "redis_master_name": "elig"}
# --redis-url excludes --redis-sentinel (and --read-from replicas needs Sentinel):
# the all-flags test gives the Sentinel ones; --redis-url is checked on its own.
EXCLUDED = {"redis_url"}


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
    if action.dest in SAMPLES:
        return [flag, SAMPLES[action.dest]], SAMPLES[action.dest], SAMPLES[action.dest]
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
        if action.dest in EXCLUDED:
            assert action.dest in names
            continue
        assert action.dest in names, f"{action.option_strings}: no Settings field {action.dest}"
        args, raw, value = _sample(action, getattr(defaults, action.dest))
        argv += args
        env[ENV_PREFIX + action.dest.upper()] = raw
        want[action.dest] = value
    assert "load_timeout_s" in want  # issue 13: it was a flag without a variable
    assert want["read_from"] == "replicas"

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


def test_redis_url_flag_and_variable() -> None:
    url = "rediss://gateway:s3cret@redis.example:6380/0"
    assert Settings.from_env({"ELIG_REDIS_URL": url}).redis_url == url
    args = build_parser(Settings()).parse_args(["--redis-url", url])
    assert Settings().with_overrides(redis_url=args.redis_url).redis_url == url


def test_sentinel_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ELIG_REDIS_SENTINEL": "10.0.0.1:26379,10.0.0.2:26379",
            "ELIG_REDIS_MASTER_NAME": "elig",
            "ELIG_READ_FROM": "replicas",
        }
    )
    assert settings.redis_url is None
    assert (settings.redis_master_name, settings.read_from) == ("elig", "replicas")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # Both: refused, naming both flags.
        (
            {"ELIG_REDIS_URL": "redis://r:6379/0", "ELIG_REDIS_SENTINEL": "s:26379"},
            "--redis-url .*--redis-sentinel",
        ),
        ({"ELIG_REDIS_SENTINEL": "s:26379"}, "needs --redis-master-name"),
        ({"ELIG_REDIS_MASTER_NAME": "elig"}, "only used with --redis-sentinel"),
        ({"ELIG_REDIS_SENTINEL": "s:port", "ELIG_REDIS_MASTER_NAME": "e"}, "not a TCP port"),
        ({"ELIG_REDIS_URL": "redis://r:6379/0", "ELIG_READ_FROM": "replicas"}, "read_from"),
        ({"ELIG_READ_FROM": "nearest"}, "read_from"),
        ({"ELIG_REDIS_URL": "http://r:6379/0"}, "not a redis"),
    ],
)
def test_bad_redis_settings_are_refused_naming_the_flag(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)


def test_the_gateway_refuses_url_and_sentinel_together(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    argv = ["--redis-url", "redis://r:6379/0", "--redis-sentinel", "s:26379"]
    with pytest.raises(SystemExit) as excinfo:
        gateway_main.main([*argv, "--redis-master-name", "elig"])
    assert excinfo.value.code == 2
    assert "--redis-sentinel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gateway_main.main(["--redis-sentinel", "s:26379"])
    assert "--redis-master-name" in capsys.readouterr().err
