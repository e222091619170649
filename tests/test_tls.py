"""TLS and mutual TLS on the gRPC port of the real gateway, with certificates
made by the test; and Redis reached over TLS with an ACL user and password
through the URL (a real redis-server with its TLS port on), and through a
Sentinel that speaks only TLS too."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import orjson
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract.snapshot import Keys
from gateway.ops.audit import OverrideRecord, read_overrides
from gateway.ops.redis_process import free_port
from gateway.ops.tls import server_credentials
from gateway.settings import Settings
from proto.eligibility.v1 import eligibility_pb2 as pb
from proto.eligibility.v1 import eligibility_pb2_grpc as pb_grpc
from tests.certs import Authority, Pem
from tests.gateway_process import ROOT, GatewayProcess
from tests.ops_data import ACTIVE, HOSPITAL, PHARMACY, SUSPENDED, hospital_claim, line, publish


class Certificates:
    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory, "test-ca")
        self.server = self.ca.issue("gateway", server=True)
        self.client = self.ca.issue("his-client", server=False)
        self.pharmacy = self.ca.issue("pos-client", server=False)
        self.regulator = self.ca.issue("regulator-client", server=False)
        self.stranger = self.ca.issue("stranger-client", server=False)
        rogue = Authority(directory, "rogue-ca")
        self.rogue_client = rogue.issue("rogue-client", server=False)

    def channel_credentials(self, client: Pem | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.pem.cert_bytes(),
            private_key=client.key_bytes() if client is not None else None,
            certificate_chain=client.cert_bytes() if client is not None else None,
        )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certs"))


class TlsGatewayProcess(GatewayProcess):
    """The gateway process, with its health probe speaking TLS."""

    def __init__(self, credentials: grpc.ChannelCredentials, *args: str) -> None:
        super().__init__(*args)
        self.credentials = credentials

    def health(self) -> int | None:
        with grpc.secure_channel(self.address, self.credentials) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
            except grpc.RpcError:
                return None


def check(address: str, credentials: grpc.ChannelCredentials | None) -> pb.CheckClaimResponse:
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        stub = pb_grpc.EligibilityGatewayStub(channel)
        response: pb.CheckClaimResponse = stub.CheckClaim(
            hospital_claim("TLS-1", line(ACTIVE, "1")), timeout=5
        )
        return response


@pytest.fixture(scope="module")
def published(redis_url: str) -> str:
    prefix = "tls-e2e"
    publish(redis_url, prefix)
    return prefix


def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    certs: Certificates, redis_url: str, published: str
) -> None:
    tls = ("--tls-cert-file", str(certs.server.cert), "--tls-key-file", str(certs.server.key))
    with TlsGatewayProcess(certs.channel_credentials(), redis_url, published, *tls) as gateway:
        assert check(gateway.address, certs.channel_credentials()).lines[0].decision == (
            pb.DECISION_PAY
        )
        with pytest.raises(grpc.RpcError) as plaintext:
            check(gateway.address, None)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
        wrong_ca = grpc.ssl_channel_credentials(root_certificates=certs.rogue_client.cert_bytes())
        with pytest.raises(grpc.RpcError) as untrusted:
            check(gateway.address, wrong_ca)
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    certs: Certificates, redis_url: str, published: str
) -> None:
    mtls = (
        "--tls-cert-file", str(certs.server.cert),
        "--tls-key-file", str(certs.server.key),
        "--tls-client-ca-file", str(certs.ca.pem.cert),
    )  # fmt: skip
    good = certs.channel_credentials(certs.client)
    with TlsGatewayProcess(good, redis_url, published, *mtls) as gateway:
        assert check(gateway.address, good).lines[0].decision == pb.DECISION_PAY
        for refused in (certs.channel_credentials(), certs.channel_credentials(certs.rogue_client)):
            with pytest.raises(grpc.RpcError) as info:
                check(gateway.address, refused)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # The refusals did not hurt the server.
        assert check(gateway.address, good).lines[0].decision == pb.DECISION_PAY


def test_unreadable_certificate_files_stop_the_gateway_naming_the_setting(
    certs: Certificates, tmp_path: Path, redis_url: str
) -> None:
    missing = tmp_path / "missing.crt"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "--redis-url", redis_url, "--port", "0",
         "--allow-unsigned",
         "--tls-cert-file", str(missing), "--tls-key-file", str(certs.server.key)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "tls_cert_file" in proc.stderr and str(missing) in proc.stderr
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    settings = Settings(tls_cert_file=str(not_pem), tls_key_file=str(certs.server.key))
    with pytest.raises(ValueError, match=r"tls_cert_file: .* is not a PEM file"):
        server_credentials(settings)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"tls_cert_file": "a.crt"}, "tls_key_file"),
        ({"tls_client_ca_file": "ca.crt"}, "tls_client_ca_file"),
    ],
)
def test_incomplete_tls_settings_are_refused(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings().with_overrides(**overrides)


@pytest.fixture(scope="module")
def tls_redis(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server reachable only over TLS, where the default user is off
    and the gateway's user may touch only its own prefix."""
    directory = tmp_path_factory.mktemp("tls-redis")
    port = free_port()
    redis_cert = certs.ca.issue("redis", server=True)
    config = directory / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                "bind 127.0.0.1",
                f"tls-cert-file {redis_cert.cert}",
                f"tls-key-file {redis_cert.key}",
                f"tls-ca-cert-file {certs.ca.pem.cert}",
                "tls-auth-clients no",
                'save ""',
                "appendonly no",
                f"dir {directory}",
                f"logfile {directory / 'redis.log'}",
                "user default off",
                "user loader on >loader-secret ~acl:* &acl:* +@all -@dangerous",
                "user gateway on >gateway-secret ~acl:* &acl:* "
                "+@read +@pubsub +@connection +xadd -@dangerous",
                # What a Sentinel needs of the nodes it watches (redis.io, Sentinel ACL).
                "user sentinel on >sentinel-secret allchannels +multi +slaveof +ping +exec "
                "+subscribe +config|rewrite +role +publish +info +client|setname +client|kill "
                "+script|kill",
                "",
            ]
        )
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen([binary, str(config)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = redis.Redis.from_url(url(port, "loader", "loader-secret", certs))
                probe.ping()
                probe.close()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, (directory / "redis.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "TLS redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def url(port: int, user: str, password: str, certs: Certificates) -> str:
    return (
        f"rediss://{user}:{password}@127.0.0.1:{port}/0"
        f"?ssl_ca_certs={certs.ca.pem.cert}&ssl_cert_reqs=required"
    )


@pytest.mark.slow
def test_redis_over_tls_with_an_acl_user_and_password_in_the_url(
    certs: Certificates, tls_redis: int
) -> None:
    loader_url = url(tls_redis, "loader", "loader-secret", certs)
    publish(loader_url, "acl")
    # Without TLS, or with a wrong password, Redis refuses.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=tls_redis, socket_timeout=2).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url(tls_redis, "gateway", "wrong", certs)).ping()
    gateway_url = url(tls_redis, "gateway", "gateway-secret", certs)
    with GatewayProcess(gateway_url, "acl") as gateway:
        response = check(gateway.address, None)
        assert response.lines[0].decision == pb.DECISION_PAY
        assert response.index_version >= 1
        # The log never shows the password.
        assert "gateway-secret" not in gateway.log()


def test_client_identity_map_confines_each_certificate_to_its_institutions(
    certs: Certificates, redis_url: str, published: str, tmp_path: Path
) -> None:
    identity_file = tmp_path / "clients.json"
    identity_file.write_bytes(
        orjson.dumps(
            {
                "clients": {
                    "his-client": {"role": "institution", "institutions": [HOSPITAL]},
                    "pos-client": {"role": "institution", "institutions": [PHARMACY]},
                    "regulator-client": {"role": "regulator"},
                }
            }
        )
    )
    mtls = (
        "--tls-cert-file", str(certs.server.cert),
        "--tls-key-file", str(certs.server.key),
        "--tls-client-ca-file", str(certs.ca.pem.cert),
        "--client-identity-file", str(identity_file),
    )  # fmt: skip
    his = certs.channel_credentials(certs.client)

    def call(credentials: grpc.ChannelCredentials, method: str, request: object) -> object:
        with grpc.secure_channel(gateway.address, credentials) as channel:
            stub = pb_grpc.EligibilityGatewayStub(channel)
            return getattr(stub, method)(request, timeout=5)

    def denied(credentials: grpc.ChannelCredentials, method: str, request: object) -> str:
        with pytest.raises(grpc.RpcError) as info:
            call(credentials, method, request)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        return str(info.value.details())

    with TlsGatewayProcess(his, redis_url, published, *mtls) as gateway:
        # The hospital's certificate decides its own claims...
        assert check(gateway.address, his).lines[0].decision == pb.DECISION_PAY
        # ...but the pharmacy's certificate may not submit them, nor may a
        # certificate the CA signed that the map does not name.
        pos = certs.channel_credentials(certs.pharmacy)
        claim = hospital_claim("TLS-2", line(ACTIVE, "1"))
        assert "institution_code" in denied(pos, "CheckClaim", claim)
        stranger = certs.channel_credentials(certs.stranger)
        assert "not in the identity map" in denied(stranger, "CheckClaim", claim)
        # Status lookups: own staff only, for institutions; anyone for a regulator.
        ask = pb.GetPractitionerStatusRequest(practitioner_code=ACTIVE)
        assert call(his, "GetPractitionerStatus", ask).status == pb.STATUS_ACTIVE  # type: ignore[attr-defined]
        assert "own institutions" in denied(pos, "GetPractitionerStatus", ask)
        unknown = pb.GetPractitionerStatusRequest(practitioner_code="D999999999999")
        assert "own institutions" in denied(his, "GetPractitionerStatus", unknown)
        regulator = certs.channel_credentials(certs.regulator)
        assert call(regulator, "GetPractitionerStatus", ask).status == pb.STATUS_ACTIVE  # type: ignore[attr-defined]
        assert "may not act" in denied(regulator, "CheckClaim", claim)
        # Every override record carries the identity of the certificate that asked.
        emergency = hospital_claim("TLS-3", line(SUSPENDED, "9", 100, emergency=True))
        answer = call(his, "CheckClaim", emergency)
        assert answer.lines[0].decision == pb.DECISION_PAY_EMERGENCY_OVERRIDE  # type: ignore[attr-defined]
        client = redis.Redis.from_url(redis_url)
        try:
            deadline = time.monotonic() + 10
            records: list[OverrideRecord] = []
            while not records and time.monotonic() < deadline:
                stream = Keys(published).overrides
                records = [
                    r for r in read_overrides(client, stream) if r.get("claim_id") == "TLS-3"
                ]
                time.sleep(0.05)
        finally:
            client.close()
        assert [r.get("client_identity") for r in records] == ["his-client"]


@pytest.fixture(scope="module")
def tls_sentinel(
    certs: Certificates, tls_redis: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """A Sentinel reachable only over TLS, watching the TLS redis-server over TLS
    as its ``sentinel`` user; its own clients need no password."""
    directory = tmp_path_factory.mktemp("tls-sentinel")
    port = free_port()
    sentinel_cert = certs.ca.issue("sentinel", server=True)
    config = directory / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                "bind 127.0.0.1",
                f"tls-cert-file {sentinel_cert.cert}",
                f"tls-key-file {sentinel_cert.key}",
                f"tls-ca-cert-file {certs.ca.pem.cert}",
                "tls-auth-clients no",
                "tls-replication yes",  # TLS to the nodes it watches too
                f"dir {directory}",
                f"logfile {directory / 'sentinel.log'}",
                f"sentinel monitor elig 127.0.0.1 {tls_redis} 1",
                "sentinel auth-user elig sentinel",
                "sentinel auth-pass elig sentinel-secret",
                "",
            ]
        )
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    tls = {"ssl": True, "ssl_ca_certs": str(certs.ca.pem.cert), "ssl_cert_reqs": "required"}
    try:
        deadline = time.monotonic() + 10
        while True:
            probe = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, **tls)  # type: ignore[arg-type]
            try:
                state = probe.sentinel_master("elig")
                assert isinstance(state, dict)
                if not state["is_sdown"]:  # it reached the node over TLS, as its user
                    break
            except redis.RedisError:
                pass
            finally:
                probe.close()
            assert proc.poll() is None, (directory / "sentinel.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (directory / "sentinel.log").read_text()[-2000:]
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_acl_users_and_tls_through_sentinel(
    certs: Certificates, tls_sentinel: int, tmp_path: Path
) -> None:
    """The loader and a gateway find the TLS primary through a TLS Sentinel; their ACL
    users reach the node, while the Sentinel, which has no password, gets none
    (``sentinel_password=``)."""
    query = f"?ssl_ca_certs={certs.ca.pem.cert}&ssl_cert_reqs=required&sentinel_password="

    def spec(user: str, password: str) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{tls_sentinel}/0{query}"

    from loader.cli import main as loader_main

    registry = tmp_path / "registry.csv"
    registry.write_text(
        "practitioner_code,institution_code,role,registered_on,deregistered_on\n"
        f"{ACTIVE},{HOSPITAL},doctor,2015-01-01,\n"
    )
    status = tmp_path / "status.csv"
    status.write_text("practitioner_code,status,effective_from,effective_until,reference\n")
    sentinel = ["--redis-sentinel", spec("loader", "loader-secret"), "--redis-master-name", "elig"]
    argv = ["load", "--registry", str(registry), "--status", str(status)]
    assert loader_main([*argv, *sentinel, "--prefix", "acl:sentinel"]) == 0
    wrong = ["--redis-sentinel", spec("loader", "wrong"), "--redis-master-name", "elig"]
    assert loader_main(["status", *wrong, "--prefix", "acl:sentinel"]) == 1  # AUTH refused
    gateway_spec = spec("gateway", "gateway-secret")
    with GatewayProcess(
        None,
        "acl:sentinel",
        "--redis-sentinel", gateway_spec,
        "--redis-master-name", "elig",
        "--read-from", "replicas",  # none here: the primary, through the fallback
    ) as gateway:  # fmt: skip
        response = check(gateway.address, None)
        assert response.lines[0].decision == pb.DECISION_PAY
        assert "gateway-secret" not in gateway.log()
