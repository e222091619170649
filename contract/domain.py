"""The domain's enumerations, numbered exactly as in the proto.

The index and the decision kernel work on these numbers in numpy arrays; the
servicer puts them on the wire unchanged. ``tests/test_domain.py`` checks the
numbers against the generated proto enums.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    UNSPECIFIED = 0
    ACTIVE = 1
    WARNED = 2
    SUSPENDED = 3
    TERMINATED = 4
    NOT_REGISTERED = 5


class Decision(IntEnum):
    UNSPECIFIED = 0
    PAY = 1
    REJECT = 2
    PAY_EMERGENCY_OVERRIDE = 3


class Reason(IntEnum):
    UNSPECIFIED = 0
    OK = 1
    WARNED = 2
    INVALID_PRESCRIBER_CODE = 3
    NOT_REGISTERED = 4
    NOT_REGISTERED_AT_INSTITUTION = 5
    SUSPENDED = 6
    TERMINATED = 7
    PRINCIPAL_NOT_PAYABLE = 8


class Channel(IntEnum):
    UNSPECIFIED = 0
    HOSPITAL = 1
    PHARMACY = 2
