"""Generate the Python code and type stubs for the wire contract.

    python -m proto.generate           # rewrite the generated files
    python -m proto.generate --check   # exit 1 if they drift from the .proto

The generated files are committed so that the package installs without
grpcio-tools; CI runs ``--check`` so they can never silently go stale.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("proto/eligibility/v1/eligibility.proto")
GENERATED = (
    "eligibility_pb2.py",
    "eligibility_pb2.pyi",
    "eligibility_pb2_grpc.py",
    "eligibility_pb2_grpc.pyi",
)


def _plugin(name: str) -> str:
    """The protoc plugin ``name`` from the virtual environment this Python runs in.

    Its scripts directory is on PATH only inside an activated environment;
    ``make test`` runs ``.venv/bin/python`` without activating it.
    """
    scripts = Path(sysconfig.get_path("scripts"))
    path = scripts / name
    if not path.exists():
        raise SystemExit(f"{name} not found in {scripts}: install the dev extras (make setup)")
    return str(path)


def generate(out_dir: Path) -> None:
    """Run protoc on the contract, writing the generated files under ``out_dir``."""
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code drifts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh_dir = Path(tmp) / PROTO.parent
        committed_dir = ROOT / PROTO.parent
        drifted = [
            name
            for name in GENERATED
            if not (committed_dir / name).exists()
            or not filecmp.cmp(fresh_dir / name, committed_dir / name, shallow=False)
        ]
        if args.check:
            if drifted:
                print(f"generated code drifts from {PROTO}: {', '.join(drifted)}", file=sys.stderr)
                print("run: python -m proto.generate", file=sys.stderr)
                return 1
            print(f"generated code matches {PROTO}")
            return 0
        for name in GENERATED:
            shutil.copyfile(fresh_dir / name, committed_dir / name)
        print(f"wrote {', '.join(GENERATED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
