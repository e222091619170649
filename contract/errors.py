"""Domain exceptions, shared by the gateway and the loader.

    EligibilityError
    ├── InvalidCodeError        a practitioner or institution code is malformed
    ├── InvalidRequestError     a request is structurally bad (names the field)
    ├── IndexNotLoadedError     no index yet: the gateway cannot decide
    ├── SnapshotError           a snapshot in Redis is missing or inconsistent
    ├── StalePublishError       a newer snapshot is already current (loader)
    ├── ChangeNotPublishedError a live change could not be published (loader)
    └── LoadError               a loader input record is bad (file, line, field)

The gRPC boundary maps each to a status code in one table
(``gateway.servicer.STATUS_FOR_ERROR``); a test checks every class is mapped.
"""

from __future__ import annotations


class EligibilityError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidCodeError(EligibilityError, ValueError):
    def __init__(self, code: str, reason: str) -> None:
        shown = code if len(code) <= 32 else f"{code[:32]}… ({len(code)} chars)"
        super().__init__(f"invalid code {shown!r}: {reason}")
        self.code = code
        self.reason = reason


class InvalidRequestError(EligibilityError, ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class IndexNotLoadedError(EligibilityError):
    def __init__(self) -> None:
        super().__init__("no status index loaded yet")


class SnapshotError(EligibilityError):
    """A snapshot in Redis is missing, incomplete or of an unknown format."""


class StalePublishError(EligibilityError):
    """A newer snapshot was published while this one was being written."""

    def __init__(self, version: int, current: int) -> None:
        super().__init__(
            f"snapshot version {version} not published: version {current} is already current"
        )
        self.version = version
        self.current = current


class ChangeNotPublishedError(EligibilityError):
    """A live change was not published: no snapshot, another one current, or lost races."""


class LoadError(EligibilityError):
    """A bad input record: the load stops and nothing is published."""

    def __init__(self, file: str, line: int, field: str, reason: str) -> None:
        super().__init__(f"{file}:{line}: field {field!r}: {reason}")
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason
