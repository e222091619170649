"""Domain exceptions, shared by the gateway and the loader.

    EligibilityError
    ├── InvalidCodeError        a practitioner or institution code is malformed
    ├── InvalidRequestError     a request is structurally bad (names the field)
    ├── PermissionDeniedError   the client's certificate may not do this
    ├── IndexNotLoadedError     no index yet: the gateway cannot decide
    ├── SnapshotError           a snapshot in Redis is missing or inconsistent
    │   └── SignatureError      ... or not signed by a trusted key
    ├── StalePublishError       a newer snapshot is already current (loader)
    ├── ChangeNotPublishedError a live change could not be published (loader)
    ├── BuildError              timelines do not fit the registry: no snapshot (loader)
    └── LoadError               a loader input record is bad (file, line, field)
        └── UnreadableFileError a whole input file cannot be read

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


class PermissionDeniedError(EligibilityError):
    """The client's certificate may not do this (``gateway.ops.identity``)."""


class IndexNotLoadedError(EligibilityError):
    def __init__(self) -> None:
        super().__init__("no status index loaded yet")


class SnapshotError(EligibilityError):
    """A snapshot in Redis is missing, incomplete or of an unknown format."""


class SignatureError(SnapshotError):
    """Published data is unsigned, signed by an untrusted key, or does not match its signature."""


class StalePublishError(EligibilityError):
    """Another snapshot became current while this one was being written."""

    def __init__(self, version: int, current: int, expected: int = -1) -> None:
        if expected >= 0 and current != expected:
            was = f"version {expected}" if expected else "nothing"
            reason = (
                f"version {current} was published since this run read {was}: "
                "another load ran at the same time (rerun, or --replace to publish anyway)"
            )
        else:
            reason = f"version {current} is already current"
        super().__init__(f"snapshot version {version} not published: {reason}")
        self.version = version
        self.current = current


class ChangeNotPublishedError(EligibilityError):
    """A live change was not published: no snapshot, another one current, or lost races."""


class BuildError(EligibilityError, ValueError):
    """The snapshot arrays cannot be built: a status or points timeline names a
    practitioner not in the registry, or is out of order or out of range.

    Input records are checked before (``LoadError``), so this is the loader's
    own inconsistency; a ``ValueError`` as it was before it joined the tree.
    """


class LoadError(EligibilityError):
    """A bad input record: the load stops and nothing is published."""

    def __init__(self, file: str, line: int, field: str, reason: str) -> None:
        super().__init__(f"{file}:{line}: field {field!r}: {reason}")
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason


class UnreadableFileError(LoadError):
    """The file as a whole cannot be read (missing, a directory, not allowed):
    said as "cannot read FILE: reason", without a line or a field."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(file, 0, "", reason)
        self.args = (f"cannot read {file}: {reason}",)
