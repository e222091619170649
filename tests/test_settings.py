from __future__ import annotations

import pytest

from gateway.settings import Settings


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
