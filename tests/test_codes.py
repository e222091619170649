from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract import codes
from contract.errors import InvalidCodeError

letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=2)
digits12 = st.text(alphabet="0123456789", min_size=12, max_size=12)
digits11 = st.text(alphabet="0123456789", min_size=11, max_size=11)


@given(letters, digits12)
def test_practitioner_round_trip_is_lossless(prefix: str, digits: str) -> None:
    code = prefix + digits
    key = codes.encode_practitioner(code)
    assert 0 < key < 2**50
    assert codes.decode_practitioner(key) == code


@given(letters, digits12, letters, digits12)
def test_practitioner_keys_are_distinct_and_ordered(p1: str, d1: str, p2: str, d2: str) -> None:
    k1, k2 = codes.encode_practitioner(p1 + d1), codes.encode_practitioner(p2 + d2)
    assert (k1 == k2) == (p1 + d1 == p2 + d2)
    # Keys sort by letters ("D" just before "DA"), then digits.
    assert (k1 < k2) == ((p1.ljust(2), d1) < (p2.ljust(2), d2))


def test_one_and_two_letter_prefixes_never_collide() -> None:
    assert codes.encode_practitioner("D000000000001") != codes.encode_practitioner("DA000000000001")
    assert codes.decode_practitioner(codes.encode_practitioner("HY110105000789")) == (
        "HY110105000789"
    )


@pytest.mark.parametrize(
    "code",
    [
        "",
        "D11010500012",  # 11 digits
        "D1101050001234",  # 13 digits
        "d110105000123",  # lowercase
        "DXY110105000123",  # three letters
        "110105000123",  # no letter
        "D11010500012X",
        "D١١٠١٠٥٠٠٠١٢٣",  # Arabic-Indic digits are digits to str.isdigit, not to us
        "Ｄ110105000123",  # full-width letter
        "D 10105000123",
        "D" + "1" * 1_000_000,
    ],
)
def test_malformed_practitioner_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidCodeError):
        codes.encode_practitioner(code)
    assert codes.try_encode_practitioner(code) == -1


@given(st.sampled_from("HP"), digits11)
def test_institution_round_trip(letter: str, digits: str) -> None:
    code = letter + digits
    assert codes.decode_institution(codes.encode_institution(code)) == code


@pytest.mark.parametrize(
    "code", ["", "H1101050000", "H110105000011", "h11010500001", "HH1101050000"]
)
def test_malformed_institution_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidCodeError):
        codes.encode_institution(code)


@given(st.text(max_size=20))
def test_encoding_any_text_either_round_trips_or_refuses(text: str) -> None:
    key = codes.try_encode_practitioner(text)
    if key >= 0:
        assert codes.decode_practitioner(key) == text


def test_decode_refuses_keys_that_are_not_codes() -> None:
    with pytest.raises(ValueError):
        codes.decode_practitioner(5)
