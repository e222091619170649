"""The numbers the index and the kernel use are the proto's numbers."""

from __future__ import annotations

from enum import IntEnum

import pytest

from contract import domain
from proto.eligibility.v1 import eligibility_pb2 as pb


@pytest.mark.parametrize(
    ("ours", "theirs", "prefix"),
    [
        (domain.Status, pb.PractitionerStatus, "STATUS_"),
        (domain.Decision, pb.Decision, "DECISION_"),
        (domain.Reason, pb.Reason, "REASON_"),
        (domain.Channel, pb.Channel, "CHANNEL_"),
    ],
)
def test_enums_match_the_proto(ours: type[IntEnum], theirs: object, prefix: str) -> None:
    proto_values = dict(theirs.items())  # type: ignore[attr-defined]
    assert {prefix + m.name: m.value for m in ours} == proto_values
