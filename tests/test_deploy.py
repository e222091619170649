"""The container image and the Kubernetes manifests (Dockerfile, deploy/).

No container engine runs on the test machines, so the image is not built
here; what can be checked without one is: every manifest is a valid object of
a recent Kubernetes API (``kubernetes-validate``, offline, strict: unknown
fields are errors), every flag and ``ELIG_*`` variable the image and the
manifests give exists and parses in the gateway's or the loader's own parser,
the pieces refer to each other correctly (selectors, Secret keys, the
shutdown timing), and the image's health check script works over plaintext
and mutual TLS against a real gRPC health service.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import fields
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.__main__ import build_parser as gateway_parser
from gateway.settings import ENV_PREFIX, Settings
from loader import cli as loader_cli
from tests.certs import Authority

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
# A version managed clusters still run, and the newest the package has schemas for.
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
GATEWAY_VARIANTS = ("gateway", "gateway-mtls")
SETTINGS_ENV = {ENV_PREFIX + f.name.upper() for f in fields(Settings)}
# Read by deploy/docker/healthcheck.py, not by the gateway (which ignores them).
HEALTHCHECK_ENV = {
    "ELIG_HEALTHCHECK_CA_FILE",
    "ELIG_HEALTHCHECK_CERT_FILE",
    "ELIG_HEALTHCHECK_KEY_FILE",
    "ELIG_HEALTHCHECK_SERVER_NAME",
}
LOADER_ENV = {loader_cli.ENV_REDIS_URL, loader_cli.ENV_PREFIX, loader_cli.ENV_SIGNING_KEY}

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[tuple[Path, Doc]]:
    return [(path, doc) for path in sorted(K8S.rglob("*.yaml")) for doc in _load(path)]


def _one(relative: str, kind: str | None = None) -> Doc:
    docs = [d for d in _load(K8S / relative) if kind is None or d["kind"] == kind]
    assert len(docs) == 1, relative
    return docs[0]


def _by_name(kind: str, name: str) -> Doc:
    found = [d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_spec(doc: Doc) -> Doc:
    if doc["kind"] == "CronJob":
        spec: Doc = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    spec = doc["spec"]["template"]["spec"]
    return spec


def _statefulset(variant: str) -> Doc:
    return _one(f"{variant}/statefulset.yaml", "StatefulSet")


def _container(doc: Doc) -> Doc:
    (container,) = _pod_spec(doc)["containers"]
    assert isinstance(container, dict)
    return container


def _literal_env(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _config() -> dict[str, str]:
    data: dict[str, str] = _by_name("ConfigMap", "eligibility-gateway-config")["data"]
    return data


# --- every manifest is valid Kubernetes ------------------------------------


def test_the_manifests_are_there() -> None:
    kinds = {doc["kind"] for _, doc in _manifests()}
    assert kinds >= {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
        "Job",
        "CronJob",
        "PersistentVolumeClaim",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    ("path", "doc"),
    _manifests(),
    ids=[f"{p.relative_to(K8S)}:{d['kind']}" for p, d in _manifests()],
)
def test_manifest_is_valid_kubernetes(path: Path, doc: Doc, version: str) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{path.relative_to(ROOT)} {doc['kind']} (Kubernetes {version}): {exc}")


def test_a_broken_manifest_is_caught() -> None:
    """The check above can fail: a misspelt field of a probe is refused."""
    doc = _statefulset("gateway")
    probe = _container(doc)["readinessProbe"]
    probe["grcp"] = probe.pop("grpc")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


# --- the gateway's flags and variables exist and parse ---------------------


def _gateway_settings(extra_env: dict[str, str], args: list[str]) -> Settings:
    """What the gateway would run with: the environment, then the flags, as
    gateway.__main__.main does (ValueError / SystemExit on anything wrong)."""
    unknown = {k for k in extra_env if k.startswith(ENV_PREFIX)} - SETTINGS_ENV - HEALTHCHECK_ENV
    assert not unknown, f"not gateway settings: {sorted(unknown)}"
    defaults = Settings.from_env(extra_env)
    parsed = vars(gateway_parser(defaults).parse_args(args))
    overrides = {k: v for k, v in parsed.items() if k in {f.name for f in fields(Settings)}}
    return defaults.with_overrides(**overrides)


def test_configmap_keys_are_gateway_settings_that_parse() -> None:
    config = _config()
    assert set(config) <= SETTINGS_ENV, sorted(set(config) - SETTINGS_ENV)
    settings = Settings.from_env(config)
    assert settings.audit_failure_policy == "reject"


@pytest.mark.parametrize("variant", GATEWAY_VARIANTS)
def test_gateway_container_flags_and_env_exist(variant: str) -> None:
    container = _container(_statefulset(variant))
    assert "command" not in container  # the image's ENTRYPOINT: python -m gateway
    env = {**_config(), **_literal_env(container)}
    env["ELIG_REDIS_URL"] = "redis://redis.example:6379/0"  # from the Secret
    settings = _gateway_settings(env, container["args"])
    assert settings.metrics_port == 9464
    assert settings.metrics_host == "0.0.0.0"  # Prometheus scrapes from another pod
    assert settings.port == 50051
    assert settings.trusted_keys and not settings.allow_unsigned
    for name in (e["name"] for e in container["env"]):
        assert name in SETTINGS_ENV | HEALTHCHECK_ENV or not name.startswith(ENV_PREFIX)
    if variant == "gateway-mtls":
        assert settings.tls_cert_file and settings.tls_client_ca_file
        assert settings.client_identity_file
    else:
        assert settings.tls_cert_file is None


@pytest.mark.parametrize("variant", GATEWAY_VARIANTS)
def test_gateway_files_come_from_their_mounts(variant: str) -> None:
    """Every path setting is on a volume; every file taken from a Secret is a key of it."""
    doc = _statefulset(variant)
    spec = _pod_spec(doc)
    container = _container(doc)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {t["metadata"]["name"] for t in doc["spec"]["volumeClaimTemplates"]}
    for name, value in _literal_env(container).items():
        if not value.startswith("/"):
            continue
        mount = max((m for m in mounts if value.startswith(m + "/")), key=len, default=None)
        assert mount is not None, f"{name}={value} is on no volume"
        volume = mounts[mount]
        if volume in claims:  # the per-pod state volume: directories
            continue
        secret = _by_name("Secret", volumes[volume]["secret"]["secretName"])
        key = value[len(mount) + 1 :]
        assert key in secret["stringData"], f"{name}: no key {key!r} in {secret['metadata']}"


def test_spool_and_cache_are_on_the_per_pod_volume() -> None:
    doc = _statefulset("gateway")
    (template,) = doc["spec"]["volumeClaimTemplates"]
    env = _literal_env(_container(doc))
    (mount,) = [
        m["mountPath"]
        for m in _container(doc)["volumeMounts"]
        if m["name"] == template["metadata"]["name"]
    ]
    assert env["ELIG_AUDIT_SPOOL_DIR"].startswith(mount + "/")
    assert env["ELIG_SNAPSHOT_CACHE_DIR"].startswith(mount + "/")
    assert doc["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_probes_are_native_grpc_on_the_overall_health() -> None:
    container = _container(_statefulset("gateway"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # No service name: the overall status (SERVING once an index is loaded,
        # NOT_SERVING while draining), not IndexFreshness or OverrideAudit.
        assert container[probe]["grpc"] == {"port": 50051}, probe


@pytest.mark.parametrize("variant", GATEWAY_VARIANTS)
def test_shutdown_timing(variant: str) -> None:
    """README "Limits and shutdown": drain above what the readiness probe needs to
    see NOT_SERVING; terminationGracePeriodSeconds above drain + grace."""
    doc = _statefulset(variant)
    settings = Settings.from_env(_config())
    readiness = _container(doc)["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < settings.drain_s
    liveness = _container(doc)["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > settings.drain_s
    grace = _pod_spec(doc)["terminationGracePeriodSeconds"]
    assert grace > settings.drain_s + settings.shutdown_grace_s


def test_the_two_gateway_variants_differ_only_in_tls_and_probes() -> None:
    def without_tls(doc: Doc) -> Doc:
        doc = json.loads(json.dumps(doc))
        container = _container(doc)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            container.pop(probe)
        container["env"] = [
            e
            for e in container["env"]
            if not re.match(r"ELIG_(TLS_|CLIENT_IDENTITY|HEALTHCHECK_)|POD_NAMESPACE$", e["name"])
        ]
        container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "tls"]
        spec = _pod_spec(doc)
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "tls"]
        return doc

    assert without_tls(_statefulset("gateway")) == without_tls(_statefulset("gateway-mtls"))
    probe = _container(_statefulset("gateway-mtls"))["readinessProbe"]
    assert probe["exec"]["command"] == ["python", "/app/healthcheck.py"]


def test_service_pdb_and_hpa_select_the_gateways() -> None:
    statefulset = _statefulset("gateway")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    service = _by_name("Service", "eligibility-gateway")
    assert service["spec"]["clusterIP"] == "None"  # headless: clients round_robin over pods
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in _container(statefulset)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    pdb = _by_name("PodDisruptionBudget", "eligibility-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _by_name("HorizontalPodAutoscaler", "eligibility-gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])
    assert _container(statefulset)["resources"]["requests"]["cpu"]  # HPA needs a CPU request
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"]


def test_secret_and_configmap_references_exist() -> None:
    for _, doc in _manifests():
        if doc["kind"] not in ("StatefulSet", "Job", "CronJob"):
            continue
        spec = _pod_spec(doc)
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    secret = _by_name("Secret", ref["secretKeyRef"]["name"])
                    assert ref["secretKeyRef"]["key"] in secret["stringData"]
                if "configMapKeyRef" in ref:
                    config = _by_name("ConfigMap", ref["configMapKeyRef"]["name"])
                    assert ref["configMapKeyRef"]["key"] in config["data"]
            for source in container.get("envFrom", []):
                _by_name("ConfigMap", source["configMapRef"]["name"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                _by_name("Secret", volume["secret"]["secretName"])
            if "persistentVolumeClaim" in volume:
                _by_name("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_example_secrets_hold_no_real_secret() -> None:
    for path, doc in _manifests():
        if doc["kind"] == "Secret":
            assert path.name.endswith(".example.yaml")
            for key, value in doc["stringData"].items():
                # clients.json: an identity map example, names only.
                assert "REPLACE_ME" in value or key == "clients.json", f"{path}: {key}"


# --- the loader's Job and CronJob ------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"), [("loader/job.yaml", "Job"), ("loader/cronjob.yaml", "CronJob")]
)
def test_loader_flags_and_env_exist(path: str, kind: str) -> None:
    container = _container(_one(path, kind))
    assert container["command"] == ["python", "-m", "loader"]
    args = loader_cli.build_parser().parse_args(container["args"])
    assert args.command == "load"
    assert args.status is not None or args.ledger is not None
    env = {e["name"] for e in container["env"]}
    assert env <= LOADER_ENV, sorted(env - LOADER_ENV)
    assert loader_cli.ENV_SIGNING_KEY in env  # publications are signed
    assert {"ELIG_REDIS_URL"} <= env


def test_job_and_cronjob_run_the_same_pod() -> None:
    job = _one("loader/job.yaml", "Job")
    cron = _one("loader/cronjob.yaml", "CronJob")
    assert job["spec"] == cron["spec"]["jobTemplate"]["spec"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


# --- the Dockerfile ----------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def test_dockerfile_entrypoint_and_cmd_are_gateway_flags() -> None:
    instructions = _instructions()
    (entrypoint,) = [_exec_form(r) for k, r in instructions if k == "ENTRYPOINT"]
    (cmd,) = [_exec_form(r) for k, r in instructions if k == "CMD"]
    assert entrypoint == ["python", "-m", "gateway"]
    env: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    env["ELIG_REDIS_URL"] = "redis://redis.example:6379/0"
    settings = _gateway_settings(env, cmd)
    assert settings.metrics_port == 9464 and settings.metrics_host == "0.0.0.0"
    assert settings.audit_spool_dir and settings.snapshot_cache_dir


def test_dockerfile_shape() -> None:
    instructions = _instructions()
    stages = [r for k, r in instructions if k == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    (user,) = [r for k, r in instructions if k == "USER"]
    assert not user.startswith(("root", "0"))
    (expose,) = [r.split() for k, r in instructions if k == "EXPOSE"]
    assert expose == ["50051", "9464"]
    (check,) = [r for k, r in instructions if k == "HEALTHCHECK"]
    assert check.endswith('CMD ["python", "/app/healthcheck.py"]')
    runtime = instructions[[k for k, _ in instructions].index("FROM", 1) :]
    copies = [r for k, r in runtime if k == "COPY"]
    assert "--from=build /opt/venv /opt/venv" in copies  # only the venv and the check


def test_dockerignore_lets_every_copied_path_in() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for keyword, rest in _instructions():
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _ = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(source == a or source.startswith(a + "/") for a in allowed), source


# --- the image's health check script ----------------------------------------


@pytest.fixture
def health_server(tmp_path: Path) -> Iterator[tuple[health.HealthServicer, int, int, Authority]]:
    """A gRPC health service on a plaintext port and on a mutual-TLS port."""
    ca = Authority(tmp_path, "test-ca")
    server_pem = ca.issue("gateway", server=True)
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    plain = server.add_insecure_port("127.0.0.1:0")
    credentials = grpc.ssl_server_credentials(
        [(server_pem.key_bytes(), server_pem.cert_bytes())],
        root_certificates=ca.pem.cert_bytes(),
        require_client_auth=True,
    )
    tls = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield servicer, plain, tls, ca
    finally:
        server.stop(None)


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--timeout-s", "5", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_healthcheck_plaintext(
    health_server: tuple[health.HealthServicer, int, int, Authority],
) -> None:
    servicer, plain, _, _ = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert _check("--port", str(plain)).returncode == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = _check("--port", str(plain))
    assert ok.returncode == 0, ok.stderr
    assert "SERVING" in ok.stdout


def test_healthcheck_mutual_tls(
    health_server: tuple[health.HealthServicer, int, int, Authority],
) -> None:
    servicer, _, tls, ca = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    probe = ca.issue("probe", server=False)
    ok = _check(
        "--port", str(tls), "--ca-file", str(ca.pem.cert), "--cert-file", str(probe.cert),
        "--key-file", str(probe.key), "--server-name", "localhost",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    no_cert = _check("--port", str(tls), "--ca-file", str(ca.pem.cert))
    assert no_cert.returncode == 1
    assert _check("--port", str(tls)).returncode == 1  # plaintext to a TLS port


def test_healthcheck_no_server() -> None:
    refused = _check("--port", "1")
    assert refused.returncode == 1
    assert "unhealthy" in refused.stderr
