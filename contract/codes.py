"""Lossless integer encoding of practitioner and institution codes.

Practitioner codes (一人一档) are one or two uppercase ASCII letters and twelve
digits. They are stored as one ``uint64``::

    key = (27 * L1 + L2) * 10**12 + digits

with ``L1`` in 1..26 and ``L2`` in 0..26 (0 for a one-letter code), so ``D…``
and ``DA…`` never collide, and keys sort by letters (``D`` just before
``DA``), then digits. The largest
key, ``ZZ999999999999``, is below 2**50.

Institution codes are one uppercase letter and eleven digits (``H…`` hospital,
``P…`` pharmacy): ``key = L * 10**11 + digits``.

Encoding never allocates more than the code itself: a string longer than the
longest valid code is refused on its length before anything else is read.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .errors import InvalidCodeError

PRACTITIONER_DIGITS = 12
INSTITUTION_DIGITS = 11
_P_SCALE: int = 10**PRACTITIONER_DIGITS
_I_SCALE: int = 10**INSTITUTION_DIGITS
MAX_PRACTITIONER_CODE_LEN = 2 + PRACTITIONER_DIGITS
INSTITUTION_CODE_LEN = 1 + INSTITUTION_DIGITS
_A = ord("A") - 1


def _is_upper_ascii(s: str) -> bool:
    return s.isascii() and s.isalpha() and s.isupper()


def _is_ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def encode_practitioner(code: str) -> int:
    """Return the ``uint64`` key of a practitioner code; raise ``InvalidCodeError``."""
    n = len(code)
    if n not in (PRACTITIONER_DIGITS + 1, PRACTITIONER_DIGITS + 2):
        raise InvalidCodeError(code, "must be 1-2 uppercase letters and 12 digits")
    letters, digits = code[:-PRACTITIONER_DIGITS], code[-PRACTITIONER_DIGITS:]
    if not _is_upper_ascii(letters) or not _is_ascii_digits(digits):
        raise InvalidCodeError(code, "must be 1-2 uppercase letters and 12 digits")
    l1 = ord(letters[0]) - _A
    l2 = ord(letters[1]) - _A if len(letters) == 2 else 0
    return (27 * l1 + l2) * _P_SCALE + int(digits)


def try_encode_practitioner(code: str) -> int:
    """Like ``encode_practitioner`` but return -1 for a malformed code."""
    try:
        return encode_practitioner(code)
    except InvalidCodeError:
        return -1


def decode_practitioner(key: int) -> str:
    """Return the practitioner code of a key made by ``encode_practitioner``."""
    prefix, digits = divmod(int(key), _P_SCALE)
    l1, l2 = divmod(prefix, 27)
    if not 1 <= l1 <= 26:
        raise ValueError(f"not a practitioner key: {key}")
    letters = chr(l1 + _A) + (chr(l2 + _A) if l2 else "")
    return f"{letters}{digits:012d}"


def encode_institution(code: str) -> int:
    """Return the ``uint64`` key of an institution code; raise ``InvalidCodeError``."""
    if len(code) != INSTITUTION_CODE_LEN:
        raise InvalidCodeError(code, "must be one uppercase letter and 11 digits")
    letter, digits = code[0], code[1:]
    if not _is_upper_ascii(letter) or not _is_ascii_digits(digits):
        raise InvalidCodeError(code, "must be one uppercase letter and 11 digits")
    return (ord(letter) - _A) * _I_SCALE + int(digits)


def decode_institution(key: int) -> str:
    """Return the institution code of a key made by ``encode_institution``."""
    letter, digits = divmod(int(key), _I_SCALE)
    if not 1 <= letter <= 26:
        raise ValueError(f"not an institution key: {key}")
    return f"{chr(letter + _A)}{digits:011d}"


# ---------------------------------------------------------------------------
# The same encodings vectorised, for the loader's columns of millions of codes.
# They take codes already checked to be well formed (the loader matches a
# regular expression first) and check nothing: every letter is in A..Z.


def encode_practitioners_array(
    first: npt.NDArray[np.uint8], second: npt.NDArray[np.uint8], digits: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint64]:
    """``encode_practitioner`` of many well-formed codes at once.

    ``first`` and ``second`` are each code's letters as ASCII bytes (``second``
    0 for a one-letter code), ``digits`` the value of its twelve digits.
    """
    l1 = first.astype(np.uint64) - np.uint64(_A)
    l2 = (np.maximum(second, _A) - np.uint8(_A)).astype(np.uint64)  # no second letter: 0
    keys: npt.NDArray[np.uint64] = (np.uint64(27) * l1 + l2) * np.uint64(_P_SCALE) + digits.astype(
        np.uint64
    )
    return keys


def encode_institutions_array(
    letter: npt.NDArray[np.uint8], digits: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint64]:
    """``encode_institution`` of many well-formed codes at once: each code's
    letter as an ASCII byte and the value of its eleven digits."""
    keys: npt.NDArray[np.uint64] = (letter.astype(np.uint64) - np.uint64(_A)) * np.uint64(
        _I_SCALE
    ) + digits.astype(np.uint64)
    return keys
