"""The version of this code: what ``--version`` prints on every command, the
gateway's start-up log line and its ``eligibility_build_info`` metric say.

One version for the loader and the gateway: they ship as one distribution
(``eligibility-gateway``), so a loader and a gateway of the same release
agree on the formats of ``contract``.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "eligibility-gateway"
UNKNOWN = "0+unknown"


@functools.cache
def package_version() -> str:
    """The installed distribution's version; from ``pyproject.toml`` when the
    code runs from a checkout that was never installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _pyproject_version(Path(__file__).resolve().parent.parent / "pyproject.toml")


def _pyproject_version(path: Path) -> str:
    try:
        project = tomllib.loads(path.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return UNKNOWN
    version = project.get("version")
    return version if isinstance(version, str) else UNKNOWN


def version_line() -> str:
    """``--version``'s answer: the distribution and its version."""
    return f"{DISTRIBUTION} {package_version()}"
