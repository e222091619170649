"""The embedded default: a private redis-server filled with the sample data
set by the loader's own CLI, exactly as an operator would run it."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from contract.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE
from gateway.ops.redis_process import RedisProcess

log = logging.getLogger(__name__)


@dataclass
class EmbeddedData:
    redis: RedisProcess
    data_dir: Path

    @property
    def public_key(self) -> Path:
        """The loader's public key: the embedded default signs and verifies with
        a key pair of its own, made afresh (``loader keygen``)."""
        return self.data_dir / "keys" / PUBLIC_KEY_FILE

    @classmethod
    def start(cls, prefix: str, practitioners: int) -> EmbeddedData:
        server = RedisProcess().start()
        data_dir = Path(tempfile.mkdtemp(prefix="elig-sample-"))
        try:
            _loader("sample", "--out", str(data_dir), "--practitioners", str(practitioners))
            _loader("keygen", "--out", str(data_dir / "keys"))
            out = _loader(
                "load",
                "--signing-key", str(data_dir / "keys" / PRIVATE_KEY_FILE),
                "--registry", str(data_dir / "registry.csv"),
                "--status", str(data_dir / "status.csv"),
                "--ledger", str(data_dir / "ledger.csv"),
                "--policy", "national",
                "--redis-url", server.url,
                "--prefix", prefix,
            )  # fmt: skip
        except BaseException:
            server.cleanup()
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        log.info(
            "embedded redis-server loaded with the sample data set",
            extra={"redis_url": server.url, "data_dir": str(data_dir), "loader": out.strip()},
        )
        return cls(server, data_dir)

    def stop(self) -> None:
        self.redis.cleanup()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _loader(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "loader", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"loader {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout
