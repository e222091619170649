"""Who published the data: Ed25519 signatures over what the loader writes.

Redis is shared, and a gateway's own Redis user can write to it (the audit
stream needs ``XADD``), so Redis contents prove nothing by themselves. The
loader signs what it publishes with a private key only it holds; gateways
hold only public keys (a set, so that a key can be rotated: trust the new
one, publish with it, then drop the old one) and verify before they swap an
index in. What is signed:

- a snapshot's manifest, which carries the SHA-256 digest of every array
  (``contract.snapshot``): the signature covers the arrays through them;
- every change-stream entry and every overlay hash (``contract.changes``):
  base version, sequence number, dataset epoch and the digest of each array.

A signature is over canonical bytes (``canonical``): sorted-key JSON. Key
ids are the first 16 hex digits of the SHA-256 of the raw public key, so a
gateway names the key it did not know. Files are PEM (PKCS#8 private keys,
SubjectPublicKeyInfo public keys), as ``openssl`` and every KMS export them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import SignatureError

PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"


def canonical(doc: Any) -> bytes:
    """The bytes a signature covers: sorted-key compact JSON."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """The loader's private key."""

    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    def sign(self, doc: Any) -> dict[str, str]:
        """``{"key_id", "signature"}`` over ``canonical(doc)``."""
        return {"key_id": self.key_id, "signature": self.private.sign(canonical(doc)).hex()}

    @classmethod
    def from_file(cls, path: Path | str) -> Signer:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise SignatureError(f"signing key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"signing key {path}: not an Ed25519 private key")
        return cls(key)


@dataclass(frozen=True)
class Verifier:
    """The public keys a gateway trusts, by key id."""

    keys: dict[str, Ed25519PublicKey]

    def verify(self, doc: Any, signed: dict[str, Any], what: str) -> str:
        """Return the key id that signed ``doc``; ``SignatureError`` naming ``what`` if none did."""
        kid = signed.get("key_id")
        signature = signed.get("signature")
        if not isinstance(kid, str) or not isinstance(signature, str):
            raise SignatureError(f"{what} is not signed")
        public = self.keys.get(kid)
        if public is None:
            raise SignatureError(f"{what} is signed by key {kid[:16]!r}, which is not trusted")
        try:
            public.verify(bytes.fromhex(signature), canonical(doc))
        except (InvalidSignature, ValueError) as exc:
            raise SignatureError(f"{what}: the signature of key {kid} does not match") from exc
        return kid

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> Verifier:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in paths:
            try:
                public = serialization.load_pem_public_key(Path(path).read_bytes())
            except (OSError, ValueError, TypeError) as exc:
                raise SignatureError(f"trusted key {path}: {exc}") from exc
            if not isinstance(public, Ed25519PublicKey):
                raise SignatureError(f"trusted key {path}: not an Ed25519 public key")
            keys[key_id(public)] = public
        if not keys:
            raise SignatureError("no trusted public key given")
        return cls(keys)


def generate_keypair(directory: Path | str) -> tuple[Path, Path]:
    """Write a new key pair (``signing.key`` mode 0600, ``signing.pub``) into ``directory``;
    refuse to overwrite an existing private key."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    private_path, public_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise SignatureError(f"{private_path} exists: not overwriting a signing key") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path
