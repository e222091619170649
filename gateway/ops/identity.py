"""Who is calling: the client identity of a mutual-TLS connection, and what it
may do (``--client-identity-file``).

With mutual TLS every client presents a certificate signed by the client CA;
that proves who it is, not which institution it may act for. The identity
map says so, one entry per certificate identity (a subjectAltName DNS name
or URI, or the subject's common name; the first of the peer's names found
in the map is used)::

    {"clients": {
        "his.h11010500001.example":  {"role": "institution",
                                      "institutions": ["H11010500001"]},
        "pos.p11010500001.example":  {"role": "institution",
                                      "institutions": ["P11010500001"]},
        "audit.nhsa.example":        {"role": "regulator"}}}

- ``institution``: may check claims of its listed institutions only (any
  other ``institution_code`` gets PERMISSION_DENIED), and may read the status
  of practitioners registered at one of them on the date asked.
- ``regulator`` and ``ops``: may read any practitioner's status; they submit
  no claims.
- A certificate the CA signed but the map does not name: PERMISSION_DENIED.

Without mutual TLS there is no identity to check: the map cannot be used
(refused at start) and every client is trusted as the network allows (the
README's security section says so).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from contract.codes import encode_institution
from contract.errors import InvalidCodeError

ROLES = ("institution", "regulator", "ops")

# The identity of the client of the call in progress ("" without mutual TLS);
# set by the servicer, read by the override audit for its records.
CLIENT_IDENTITY: contextvars.ContextVar[str] = contextvars.ContextVar("client_identity", default="")


@dataclass(frozen=True)
class Client:
    """One identity's rights."""

    identity: str
    role: str
    institutions: frozenset[str]

    def may_claim_for(self, institution_code: str) -> bool:
        return self.role == "institution" and institution_code in self.institutions

    @property
    def reads_everyone(self) -> bool:
        return self.role in ("regulator", "ops")


@dataclass(frozen=True)
class IdentityMap:
    clients: Mapping[str, Client]

    def find(self, names: Iterable[str]) -> Client | None:
        """The entry of the first of the peer's names that the map holds."""
        for name in names:
            client = self.clients.get(name)
            if client is not None:
                return client
        return None

    @classmethod
    def from_file(cls, path: Path | str) -> IdentityMap:
        """Read and validate the map; ``ValueError`` naming the file and the entry."""
        setting = "client_identity_file"
        try:
            doc = orjson.loads(Path(path).read_bytes())
        except OSError as exc:
            raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{setting}: {path} is not JSON: {exc}") from exc
        entries = doc.get("clients") if isinstance(doc, dict) else None
        if not isinstance(entries, dict) or not entries:
            raise ValueError(f'{setting}: {path} needs a non-empty "clients" object')
        clients: dict[str, Client] = {}
        for identity, entry in entries.items():
            where = f"{setting}: {path}: clients[{identity!r}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where} is not an object")
            role = entry.get("role")
            if role not in ROLES:
                raise ValueError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
            institutions = entry.get("institutions", [])
            if not isinstance(institutions, list) or not all(
                isinstance(code, str) for code in institutions
            ):
                raise ValueError(f"{where}.institutions: not a list of institution codes")
            for code in institutions:
                try:
                    encode_institution(code)
                except InvalidCodeError as exc:
                    raise ValueError(f"{where}.institutions: {exc}") from exc
            if role == "institution" and not institutions:
                raise ValueError(f"{where}.institutions: an institution client needs at least one")
            clients[identity] = Client(identity, role, frozenset(institutions))
        return cls(clients)


def peer_names(auth_context: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The names a TLS peer's certificate carries (SANs first, then the CN), from
    grpc's ``context.auth_context()``."""
    names = [
        value.decode("utf-8", "replace")
        for key in ("x509_subject_alternative_name", "x509_common_name")
        for value in auth_context.get(key, ())
    ]
    return list(dict.fromkeys(names))
