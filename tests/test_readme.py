"""README.md is the user's first contract: every command in it works as written.

The commands are read from README.md itself: every line of its ```sh blocks and
every `inline` command in the prose that starts with ``python -m``, ``.venv/bin/``
or ``make``. Each is run the way a new user runs it, in a fresh shell that sourced
``.venv/bin/activate`` (the README says to, once, under "The two commands"):
a clean environment (no ``ELIG_*``, no ``VIRTUAL_ENV``, no venv on ``PATH`` until the
activation puts it there), ``bash -c``, against a private redis-server
(``ELIG_REDIS_URL``, a fresh ``ELIG_PREFIX``), in a temporary directory.

``PLANS`` says, for every command, how it is exercised:

- ``Run``: run as written (placeholders such as ``R`` or ``…`` filled in, files it
  names made from the sample data set beforehand), exit 0 expected;
- ``HelpCheck``: servers that serve until Ctrl-C, benchmarks of minutes, the test
  suite itself: the program is run with ``--help`` and every flag the README gives
  it must be one its parser knows;
- ``Checked``: what is neither (make targets, a tool not installed here, examples
  run by another test, a shell ``export``), with its own check and the reason;
- ``InOrder``: the loopback cluster walk-through ("Running more than one"), whose lines
  only work one after the other in one shell: ``test_the_loopback_cluster_walkthrough``
  runs them so, on free ports.

A README command missing from ``PLANS`` fails ``test_every_command_is_exercised``,
and so does a plan whose command is no longer in the README.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.ops.redis_process import free_port
from proto.eligibility.v1 import eligibility_pb2

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = ROOT / ".venv" / "bin"
ACTIVATE = VENV_BIN / "activate"
COMMAND_TIMEOUT_S = 60

# The sample data set's fixed practitioner with scoring-ledger events (loader/sample.py).
POINTS_DOCTOR = "D110105000009"
_prefixes = itertools.count()


# --- reading the README ------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    text: str  # whitespace collapsed, continuation lines joined, comments dropped
    line: int  # where it starts in README.md


def _strip_comment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` at a word start, outside quotes)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _normal(text: str) -> str:
    return " ".join(text.split())


INLINE_COMMAND = re.compile(r"(python -m |\.venv/bin/|make )\S")


def readme_commands(text: str) -> list[Command]:
    """Every ```sh block line and every inline command of the prose, in README order."""
    lines = text.splitlines()
    commands: list[Command] = []
    prose: list[str] = []  # the README with its fenced blocks blanked (line numbers kept)
    in_block = in_sh = False
    pending, pending_line = "", 0
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            in_sh = not in_block and line.strip() == "```sh"
            in_block = not in_block
            prose.append("")
            continue
        prose.append("" if in_block else line)
        if not in_sh:
            continue
        if not pending:
            pending_line = number
        body = _strip_comment(line) if not line.rstrip().endswith("\\") else line
        if body.rstrip().endswith("\\"):
            pending += body.rstrip()[:-1] + " "
            continue
        command = _normal(pending + body)
        pending = ""
        if command:
            commands.append(Command(command, pending_line))
    text_only = "\n".join(prose)
    for match in re.finditer(r"`([^`]+)`", text_only):
        command = _normal(match.group(1))
        if INLINE_COMMAND.match(command):
            at = text_only.count("\n", 0, match.start()) + 1
            commands.append(Command(command, at))
    return sorted(commands, key=lambda command: command.line)


def unique_commands() -> list[Command]:
    seen: dict[str, Command] = {}
    for command in readme_commands(README.read_text(encoding="utf-8")):
        seen.setdefault(command.text, command)
    return list(seen.values())


# --- a fresh shell with the venv activated -------------------------------------------------


def fresh_env(extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of a new login shell: nothing of this test run's venv or settings."""
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "BASH_ENV", "ENV"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith(("ELIG_", "PYTEST_"))
    }
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join(p for p in path if not p.rstrip("/").endswith("/.venv/bin"))
    env.update(extra)
    return env


def shell(
    command: str, cwd: Path, env: Mapping[str, str] = {}, timeout_s: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``command`` as typed into a shell that ran ``. .venv/bin/activate`` first."""
    script = f". {shlex.quote(str(ACTIVATE))} && {command}"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=fresh_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    out, err = result.stdout[-3000:], result.stderr[-3000:]
    return f"exit {result.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


# --- how each command is exercised ---------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Run as written, in a temporary directory prepared by ``setup``.

    ``fills``: one run per mapping, each replacing whole words of the command (the
    README's placeholders); ``instead``: the command run in its place. Either needs a
    ``reason``."""

    setup: tuple[str, ...] = ()  # names in SETUPS, in order
    fills: tuple[Mapping[str, str], ...] = ({},)
    instead: str = ""
    expect: str = ""  # in stdout
    reason: str = ""
    redis: bool = True  # ELIG_REDIS_URL set (without it the gateway is the embedded default)


@dataclass(frozen=True)
class HelpCheck:
    """``program --help`` (from the repository's root) knows every flag the README gives it."""

    program: tuple[str, ...]  # the command's first words: what runs, subcommand included
    reason: str
    files: tuple[str, ...] = ()  # inputs it names, which must exist in the repository


@dataclass(frozen=True)
class Checked:
    reason: str
    check: Callable[[str], None] = field(repr=False)


@dataclass(frozen=True)
class InOrder:
    """A line of ``CLUSTER_WALKTHROUGH``: run with the others, in order, by
    ``test_the_loopback_cluster_walkthrough``."""


Plan = Run | HelpCheck | Checked | InOrder


def _makefile_recipe(target: str) -> list[str]:
    """The recipe lines of ``target`` in the Makefile."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def check_make_run(command: str) -> None:
    # What `make run [ARGS=…]` runs; the Run plan of `make run ARGS="--exit-after-demo"`
    # runs this recipe with those ARGS.
    assert "$(PY) -m gateway $(ARGS)" in _makefile_recipe("run")


def check_make_test(command: str) -> None:
    recipe = _makefile_recipe("test")
    assert "$(PY) -m pytest" in recipe, recipe


def check_make_setup(command: str) -> None:
    lines = (ROOT / "Makefile").read_text().splitlines()
    assert any(line.startswith("setup:") for line in lines)
    assert any(line.startswith(("run: setup", "test: setup")) for line in lines)


def check_in_test_examples(needle: str) -> Callable[[str], None]:
    def check(command: str) -> None:
        text = (ROOT / "tests" / "test_examples.py").read_text()
        assert needle in text, f"tests/test_examples.py no longer runs {needle}"

    return check


def check_grpcurl(command: str) -> None:
    words = shlex.split(command.split("<")[0])
    method = next(word for word in words if word.startswith("eligibility.v1."))
    service, name = method.removeprefix("eligibility.v1.").split("/")
    assert name in eligibility_pb2.DESCRIPTOR.services_by_name[service].methods_by_name
    grpcurl = shutil.which("grpcurl")
    if grpcurl is not None:  # where it is installed, its flags are checked as well
        help_text = subprocess.run([grpcurl, "-help"], capture_output=True, text=True).stderr
        for flag in (word for word in words[1:] if word.startswith("-") and word != "-"):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), flag


def check_export(command: str) -> None:
    # The export as written, then redis-py (the loader's, the gateway's and the ops
    # tools' client) reads the URL: scheme, user, password and the TLS parameters.
    probe = (
        "python -c 'import os, redis; "
        'url = os.environ["ELIG_REDIS_URL"]; '
        "kw = redis.Redis.from_url(url).connection_pool.connection_kwargs; "
        'print(kw["username"], kw["ssl_cert_reqs"], kw["ssl_ca_certs"])\''
    )
    result = shell(f"{command} && {probe}", ROOT)
    assert result.returncode == 0, output(result)
    assert result.stdout.split() == ["gateway", "required", "/etc/elig/redis-ca.crt"]


SERVES = "serves until Ctrl-C"
BENCH = "a benchmark of minutes at national scale (not run by the tests)"

PLANS: dict[str, Plan] = {
    # The two commands.
    "make run": Checked(
        f"{SERVES}; its recipe is run with --exit-after-demo (the next plan)", check_make_run
    ),
    "make test": Checked("the whole suite, this test included", check_make_test),
    "make setup": Checked(
        "builds .venv and the compiled claim path; `make run` and `make test` depend on it",
        check_make_setup,
    ),
    '.venv/bin/python -m pytest -m "not slow"': HelpCheck(
        (".venv/bin/python", "-m", "pytest"), "the suite itself (about a minute)"
    ),
    'make run ARGS="--exit-after-demo"': Run(
        instead="python -m gateway --exit-after-demo --port 0",
        expect="claim HIS-",
        redis=False,
        reason="the tests do not run make: this is its recipe `$(PY) -m gateway $(ARGS)` "
        "with --port 0 as the README offers (50051 may be taken on a shared machine)",
    ),
    ".venv/bin/python -m gateway --redis-url redis://host:6379/0 --trusted-keys keys/signing.pub": (
        HelpCheck((".venv/bin/python", "-m", "gateway"), f"{SERVES}, against a real Redis")
    ),
    "python -m gateway --help": Run(expect="--redis-url"),
    # One call and its answer (the client examples).
    ".venv/bin/python examples/python/check_claim.py --address localhost:50051": HelpCheck(
        (".venv/bin/python", "examples/python/check_claim.py"),
        "needs a gateway on 50051 (`make run`); run against the real gateway by "
        "tests/test_examples.py",
        files=("examples/python/check_claim.py",),
    ),
    "cd examples/node && npm ci && node check_claim.js --address localhost:50051": Checked(
        "needs a gateway on 50051 and npm; built and run against the real gateway by "
        "tests/test_examples.py",
        check_in_test_examples("check_claim.js"),
    ),
    "cd examples/java && mvn -B -q package && java -jar target/check-claim.jar --address "
    "localhost:50051": Checked(
        "needs a gateway on 50051 and Maven Central; built and run against the real gateway "
        "by tests/test_examples.py (skipped there when Maven cannot fetch its packages)",
        check_in_test_examples("mvn"),
    ),
    # Loader inputs; points engine.
    "python -m loader --help": Run(expect="keygen"),
    "python -m loader sample --out DIR": Run(expect="wrote DIR/registry.csv"),
    "python -m loader load … --ledger ledger.csv --policy national|jiangxi": Run(
        setup=("sample",),
        fills=(
            {"…": "--registry registry.csv", "national|jiangxi": "national"},
            {"…": "--registry registry.csv", "national|jiangxi": "jiangxi"},
        ),
        expect="published version",
        reason="a prose fragment: `…` is the registry, the policy is one of the two",
    ),
    "python -m loader explain --registry R --ledger L CODE": Run(
        setup=("sample",),
        fills=({"R": "registry.csv", "L": "ledger.csv", "CODE": POINTS_DOCTOR},),
        expect="day settled",
        reason="R, L and CODE are placeholders: the sample's registry, ledger and a "
        "practitioner with ledger events",
    ),
    # Live changes.
    "python -m loader change --registry changed-registry.csv --status changed-status.csv "
    "--signing-key keys/signing.key": Run(
        setup=("sample", "keys", "snapshot", "changed"), expect="published change 1"
    ),
    "python -m loader change --registry changed-registry.csv --ledger changed-ledger.csv "
    "--policy national --signing-key keys/signing.key": Run(
        setup=("sample", "keys", "snapshot", "changed"), expect="published change 1"
    ),
    # Configuration.
    "python -m gateway": Run(
        instead="python -m gateway --version",
        expect="eligibility-gateway",
        reason="named as the program `--version` works on (bare, it serves until Ctrl-C)",
    ),
    "python -m loader": Run(
        instead="python -m loader --version",
        expect="eligibility-gateway",
        reason="named as the program `--version` works on",
    ),
    "python -m gateway.ops": Run(
        instead="python -m gateway.ops --version",
        expect="eligibility-gateway",
        reason="named as the program `--version` works on",
    ),
    "python -m bench.interceptor_overhead": HelpCheck(
        ("python", "-m", "bench.interceptor_overhead"), BENCH
    ),
    "python -m bench.dashboard_png": HelpCheck(
        ("python", "-m", "bench.dashboard_png"),
        "a minute of load against a real gateway, and it rewrites ops/grafana/panels.png",
    ),
    # TLS, Redis over TLS.
    "export ELIG_REDIS_URL='rediss://gateway:SECRET@redis.example:6380/0?"
    "ssl_ca_certs=/etc/elig/redis-ca.crt&ssl_cert_reqs=required'": Checked(
        "a shell builtin: run as written, then redis-py must read the URL as meant",
        check_export,
    ),
    'python -m gateway --redis-url "$ELIG_REDIS_URL" --trusted-keys keys/signing.pub '
    "--tls-cert-file gateway.crt --tls-key-file gateway.key --tls-client-ca-file clients-ca.crt": (
        HelpCheck(
            ("python", "-m", "gateway"),
            f"{SERVES}, against a real Redis over TLS; TLS and mTLS are served to real "
            "clients by tests/test_tls.py",
        )
    ),
    "grpcurl -cacert ca.crt -cert his.crt -key his.key -d @ gateway.example:50051 "
    "eligibility.v1.EligibilityGateway/CheckClaim < claim.json": Checked(
        "grpcurl is not in Debian and not installed here (its flags are checked where it "
        "is); the method it calls must exist; the same call is made by the client "
        "examples in tests/test_examples.py",
        check_grpcurl,
    ),
    # Security.
    "python -m loader keygen --out keys": Run(expect="wrote keys/signing.key"),
    # Limits; audit; sanctions.
    "python -m bench.stream_pressure": HelpCheck(("python", "-m", "bench.stream_pressure"), BENCH),
    "python -m bench.audit_durability": HelpCheck(
        ("python", "-m", "bench.audit_durability"), "kills and restarts gateways (about a minute)"
    ),
    "python -m gateway.ops overrides --since 2026-11-01 --institution H11010500001": Run(
        expect="override records"
    ),
    "python -m gateway.ops overrides --since 2026-11-01 --by-practitioner": Run(expect="rows"),
    "python -m gateway.ops sanctions --date 2026-11-25 --min-staff 20 --top 50": Run(
        setup=("sample", "keys", "snapshot"), expect="institution_code"
    ),
    "python -m gateway.ops overrides --help": Run(expect="--by-practitioner"),
    # Benchmarks.
    "python -m pytest bench/test_micro.py": HelpCheck(
        ("python", "-m", "pytest"), BENCH, files=("bench/test_micro.py",)
    ),
    "python -m bench.bench_index_load": HelpCheck(
        ("python", "-m", "bench.bench_index_load"), BENCH
    ),
    "python -m bench.throughput --plot bench/latency_vs_load.png": HelpCheck(
        ("python", "-m", "bench.throughput"), BENCH
    ),
    "python -m bench.bench_loader": HelpCheck(("python", "-m", "bench.bench_loader"), BENCH),
    "python -m bench.bench_workers": HelpCheck(("python", "-m", "bench.bench_workers"), BENCH),
    "python -m bench.fault_injection": HelpCheck(("python", "-m", "bench.fault_injection"), BENCH),
    "python -m bench.soak": HelpCheck(("python", "-m", "bench.soak"), "10 minutes of load"),
    "python -m bench.failover": HelpCheck(
        ("python", "-m", "bench.failover"),
        "three runs of tests/test_cluster.py's scenario (about 10 s each), which the tests run",
    ),
    "python -m bench.serve_national --port 50051 &": HelpCheck(
        ("python", "-m", "bench.serve_national"), f"{SERVES}, a national-scale data set"
    ),
    "locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host 127.0.0.1:50051 "
    "--csv bench/locust --html bench/locust.html": HelpCheck(
        ("locust", "-f", "bench/locustfile.py"),
        "60 s of load against bench.serve_national (above)",
        files=("bench/locustfile.py",),
    ),
}


# The loopback cluster walk-through ("Running more than one"), line by line, in order
# (the claim is sent twice). Its ports are replaced by free ones when it runs.
CLUSTER_WALKTHROUGH = (
    "mkdir -p cluster",
    'redis-server --port 6380 --save "" --appendonly no --repl-diskless-sync-delay 0 '
    '--daemonize yes --dir cluster --pidfile "$PWD/cluster/6380.pid" --logfile 6380.log',
    'redis-server --port 6381 --replicaof 127.0.0.1 6380 --save "" --appendonly no '
    '--daemonize yes --dir cluster --pidfile "$PWD/cluster/6381.pid" --logfile 6381.log',
    "for port in 26380 26381 26382; do printf 'port %s\\nsentinel monitor elig 127.0.0.1 6380 "
    "2\\nsentinel down-after-milliseconds elig 1000\\nsentinel failover-timeout elig 5000\\n' "
    '"$port" > "cluster/sentinel-$port.conf"; redis-server "cluster/sentinel-$port.conf" '
    '--sentinel --daemonize yes --dir cluster --pidfile "$PWD/cluster/$port.pid" '
    '--logfile "$port.log"; done',
    "export ELIG_REDIS_SENTINEL=127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382 "
    "ELIG_REDIS_MASTER_NAME=elig",
    "python -m loader keygen --out cluster/keys",
    "python -m loader sample --out cluster/sample",
    "python -m loader load --registry cluster/sample/registry.csv --status "
    "cluster/sample/status.csv --signing-key cluster/keys/signing.key",
    "for port in 50061 50062 50063; do python -m gateway --port $port --read-from replicas "
    "--trusted-keys cluster/keys/signing.pub --audit-spool-dir cluster/spool-$port > "
    "cluster/gateway-$port.log 2>&1 & done",
    "for port in 50061 50062 50063; do until python deploy/docker/healthcheck.py --port $port "
    "2>/dev/null; do sleep 0.2; done; done",
    "python examples/python/check_claim.py --address "
    "ipv4:127.0.0.1:50061,127.0.0.1:50062,127.0.0.1:50063",
    "kill -9 $(cat cluster/6380.pid)",
    "until redis-cli -p 26380 sentinel get-master-addr-by-name elig | grep -qx 6381; do sleep "
    "0.2; done",
    "grep -e practitioner_code -e D110105000001 cluster/sample/registry.csv > "
    "cluster/changed-registry.csv",
    "printf 'practitioner_code,status,effective_from,effective_until,reference\\nD110105000001,"
    "SUSPENDED,2026-01-01,2099-12-31,CHANGE-1\\n' > cluster/changed-status.csv",
    "python -m loader change --registry cluster/changed-registry.csv --status "
    "cluster/changed-status.csv --signing-key cluster/keys/signing.key",
    "python examples/python/check_claim.py --address "
    "ipv4:127.0.0.1:50061,127.0.0.1:50062,127.0.0.1:50063",
    "kill $(jobs -p) $(cat cluster/6381.pid cluster/26380.pid cluster/26381.pid cluster/26382.pid)",
)
CLUSTER_PORTS = ("6380", "6381", "26380", "26381", "26382", "50061", "50062", "50063")
PLANS.update({command: InOrder() for command in CLUSTER_WALKTHROUGH})


# --- what Run commands find in their directory ----------------------------------------------


@pytest.fixture(scope="module")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample data set (registry.csv, status.csv, ledger.csv) and a key pair in keys/."""
    template = tmp_path_factory.mktemp("readme-sample")
    for command in ("python -m loader sample --out .", "python -m loader keygen --out keys"):
        result = shell(command, template)
        assert result.returncode == 0, output(result)
    return template


def _rows(path: Path, practitioner: str) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    column = header.index("practitioner_code")
    return header, [row for row in rows if row[column] == practitioner]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *rows])


def setup_changed(cwd: Path, template: Path, env: Mapping[str, str]) -> None:
    """changed-*.csv: the complete new records of one practitioner (README, Live changes)."""
    header, rows = _rows(template / "registry.csv", POINTS_DOCTOR)
    assert rows, f"{POINTS_DOCTOR} is no longer in the sample registry"
    _write(cwd / "changed-registry.csv", header, rows)
    status_header, _ = _rows(template / "status.csv", POINTS_DOCTOR)
    suspended = {"practitioner_code": POINTS_DOCTOR, "status": "SUSPENDED"}
    suspended |= {"effective_from": "2026-01-01", "effective_until": "2099-12-31"}
    suspended["reference"] = "README-CHANGE-1"
    _write(
        cwd / "changed-status.csv",
        status_header,
        [[suspended.get(name, "") for name in status_header]],
    )
    ledger_header, events = _rows(template / "ledger.csv", POINTS_DOCTOR)
    assert events, f"{POINTS_DOCTOR} has no ledger events in the sample any more"
    _write(cwd / "changed-ledger.csv", ledger_header, events)


def setup_snapshot(cwd: Path, template: Path, env: Mapping[str, str]) -> None:
    command = (
        "python -m loader load --registry registry.csv --status status.csv "
        "--signing-key keys/signing.key"
    )
    result = shell(command, cwd, env)
    assert result.returncode == 0, output(result)


def setup_sample(cwd: Path, template: Path, env: Mapping[str, str]) -> None:
    for name in ("registry.csv", "status.csv", "ledger.csv"):
        shutil.copy(template / name, cwd / name)


def setup_keys(cwd: Path, template: Path, env: Mapping[str, str]) -> None:
    shutil.copytree(template / "keys", cwd / "keys")


SETUPS: dict[str, Callable[[Path, Path, Mapping[str, str]], None]] = {
    "sample": setup_sample,
    "keys": setup_keys,
    "snapshot": setup_snapshot,
    "changed": setup_changed,
}


# --- the tests -----------------------------------------------------------------------------

COMMANDS = unique_commands()


def _plans(kind: type) -> list[object]:
    return [
        pytest.param(command, PLANS[command.text], id=f"L{command.line}:{command.text[:50]}")
        for command in COMMANDS
        if isinstance(PLANS.get(command.text), kind)
    ]


def test_every_command_is_exercised() -> None:
    in_readme = {command.text: command.line for command in COMMANDS}
    missing = [f"README.md:{line}: {text}" for text, line in in_readme.items() if text not in PLANS]
    assert not missing, (
        "README commands neither run nor listed in tests/test_readme.py PLANS (add a Run, or a "
        "HelpCheck/Checked with the reason it cannot run here):\n" + "\n".join(missing)
    )
    stale = [text for text in PLANS if text not in in_readme]
    assert not stale, "PLANS lists commands no longer in README.md:\n" + "\n".join(stale)
    unexplained = [
        text
        for text, plan in PLANS.items()
        if isinstance(plan, Run) and (plan.instead or plan.fills != ({},)) and not plan.reason
    ]
    assert not unexplained, f"a command not run as written needs a reason: {unexplained}"


def test_readme_says_how_to_activate_near_the_top() -> None:
    text = README.read_text(encoding="utf-8")
    activation = text.find(". .venv/bin/activate")
    assert 0 <= activation < text.find("\n## ", text.find("## The two commands") + 1)


def test_activation_puts_the_venv_first(tmp_path: Path) -> None:
    """What the README's paragraph promises a fresh shell after `. .venv/bin/activate`."""
    programs = ("python", "eligibility-gateway", "eligibility-loader", "eligibility-ops")
    result = shell(f"command -v {' '.join(programs)}", tmp_path)
    assert result.returncode == 0, output(result)
    assert result.stdout.split() == [str(VENV_BIN / program) for program in programs]


@pytest.mark.parametrize(("command", "plan"), _plans(Run))
def test_run(
    command: Command,
    plan: Run,
    tmp_path: Path,
    sample_template: Path,
    redis_url: str,
) -> None:
    env = {"ELIG_PREFIX": f"readme{next(_prefixes)}"}
    if plan.redis or plan.setup:
        env["ELIG_REDIS_URL"] = redis_url
    for name in plan.setup:
        SETUPS[name](tmp_path, sample_template, env)
    for fill in plan.fills:
        words = (plan.instead or command.text).split(" ")
        typed = " ".join(fill.get(word, word) for word in words)
        result = shell(typed, tmp_path, env)
        assert result.returncode == 0, f"README.md:{command.line}: {typed}\n{output(result)}"
        assert plan.expect in result.stdout, f"README.md:{command.line}: {typed}\n{output(result)}"


@pytest.mark.parametrize(("command", "plan"), _plans(HelpCheck))
def test_help_knows_every_flag(command: Command, plan: HelpCheck) -> None:
    words = shlex.split(command.text)
    assert tuple(words[: len(plan.program)]) == plan.program, "the plan names another program"
    for name in plan.files:
        assert (ROOT / name).is_file(), f"README.md:{command.line}: {name} does not exist"
    result = shell(shlex.join([*plan.program, "--help"]), ROOT)
    assert result.returncode == 0, f"README.md:{command.line}: {command.text}\n{output(result)}"
    flags = [word.split("=")[0] for word in words[len(plan.program) :] if word.startswith("-")]
    unknown = [
        flag
        for flag in flags
        if flag != "-" and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", result.stdout)
    ]
    assert not unknown, (
        f"README.md:{command.line}: {command.text}\nflags {unknown} are not in "
        f"`{' '.join(plan.program)} --help`"
    )


@pytest.mark.parametrize(("command", "plan"), _plans(Checked))
def test_checked(command: Command, plan: Checked) -> None:
    plan.check(command.text)


@pytest.mark.slow
def test_the_loopback_cluster_walkthrough(tmp_path: Path) -> None:
    """The "Running more than one" lines as one shell session, in README order, on free
    ports (each README port replaced by one), in a directory where ``examples/`` and
    ``deploy/`` are the repository's: the claim is paid before the failover and rejected
    after the change."""
    lines = [
        c.text
        for c in readme_commands(README.read_text(encoding="utf-8"))
        if isinstance(PLANS.get(c.text), InOrder)
    ]
    assert lines == list(CLUSTER_WALKTHROUGH), "the README's walk-through changed"
    ports = {port: str(free_port()) for port in CLUSTER_PORTS}
    pattern = re.compile(r"\b(" + "|".join(CLUSTER_PORTS) + r")\b")
    script = "\n".join(pattern.sub(lambda m: ports[m.group(1)], line) for line in lines)
    for name in ("examples", "deploy"):
        (tmp_path / name).symlink_to(ROOT / name)
    # Whatever happens, nothing is left running: the servers by their pid files, the
    # gateways as this shell's jobs (no drain: ELIG_DRAIN_S=0).
    cleanup = (
        "trap 'code=$?; set +e; kill $(jobs -p) 2>/dev/null; cat cluster/*.pid 2>/dev/null | "
        "xargs -r kill -9 2>/dev/null; wait; exit $code' EXIT"
    )
    result = shell(f"set -e\n{cleanup}\n{script}", tmp_path, {"ELIG_DRAIN_S": "0"}, timeout_s=120)
    assert result.returncode == 0, output(result)
    out = result.stdout
    assert "replicas: 1 of 1 acknowledged" in out, output(result)
    paid, rejected = (
        out.index("line 1: DECISION_PAY REASON_OK"),
        out.index("line 1: DECISION_REJECT REASON_SUSPENDED"),
    )
    assert paid < out.index("published change 1") < rejected, output(result)
