"""How the real gateway decides claims (issue 14): the compiled claim path,
or nothing; the Python reference only when asked for (``--pure-python``),
said in the log and in a metric."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from gateway.ops.redis_process import free_port
from tests.gateway_process import ROOT

# python -m gateway with the compiled extension unimportable, as on a machine
# where it was never built.
WITHOUT_KERNEL = (
    "import runpy, sys; sys.modules['gateway.kernel'] = None; "
    "runpy.run_module('gateway', run_name='__main__', alter_sys=True)"
)


def run_gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_KERNEL, "--port", "0", "--drain-s", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_the_compiled_claim_path_the_gateway_refuses_to_start() -> None:
    result = run_gateway("--exit-after-demo")
    assert result.returncode != 0
    assert "the compiled claim path gateway.kernel is not built" in result.stderr
    assert "make setup" in result.stderr and "--pure-python" in result.stderr
    assert "claim HIS-" not in result.stdout  # nothing was decided


def test_pure_python_decides_the_demo_claims_and_says_so() -> None:
    result = run_gateway("--pure-python", "--exit-after-demo")
    assert result.returncode == 0, result.stderr
    assert "--pure-python: claims are decided by the Python reference" in result.stderr
    assert "6 of 11 lines rejected" in result.stdout  # the same demo answers


def test_the_compiled_gateway_exports_pure_python_0() -> None:
    metrics_port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "--port",
            "0",
            "--drain-s",
            "0",
            "--no-demo",
            "--metrics-port",
            str(metrics_port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "gateway serving on" in line:
                break
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert "eligibility_pure_python 0.0" in text
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
