"""API keys: generation, hashing at rest, and the authenticator on every request.

Keys are stored only as PBKDF2 hashes. Checking a hash costs milliseconds on purpose, so a
verified Authorization header is remembered for a short while (`ttl_s`, SQUALL_IDENTITY_TTL,
2 s): the warm invoke path pays a dict lookup, not a key derivation. When that time is up the
namespace's record is read again (one store read, no key derivation while its key hash is
unchanged), so a deleted namespace, a rotated key or new limits from `squall admin` take
effect on a running server within `ttl_s`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

from squall.abc import EntityStore, SubjectRecord

_ITERATIONS = 20_000
_CACHE_TTL_S = 2.0


@dataclass(slots=True, frozen=True)
class Identity:
    """Who is calling: a namespace and the credentials it was proven with."""

    namespace: str
    subject: str
    uuid: str
    # `uuid:key`, handed to actions as __OW_API_KEY like OpenWhisk does; None for an identity
    # the platform acts as without the key (ControllerService.system_identity).
    api_key: str | None
    limits: dict[str, object]


def generate_auth() -> str:
    """A new `uuid:key` pair in OpenWhisk's format (64 alphanumeric characters of key)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    key = "".join(secrets.choice(alphabet) for _ in range(64))
    return f"{uuid.uuid4()}:{key}"


def hash_key(key: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def verify_key(key: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    candidate = hash_key(key, salt=bytes.fromhex(salt), iterations=int(iterations))
    return hmac.compare_digest(candidate.rsplit("$", 1)[1], digest)


def subject_record(
    namespace: str, auth: str, limits: dict[str, object] | None = None
) -> SubjectRecord:
    """The stored form of `uuid:key` credentials for `namespace`."""
    uid, _, key = auth.partition(":")
    return SubjectRecord(namespace, namespace, uid, hash_key(key), dict(limits or {}))


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(uuid, key) from `Basic base64(uuid:key)`, or None when absent or malformed."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    uid, sep, key = decoded.partition(":")
    return (uid, key) if sep and uid and key else None


class Authenticator:
    """Turns an Authorization header into an Identity, or None."""

    def __init__(self, store: EntityStore, *, ttl_s: float = _CACHE_TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s
        # header -> (fresh until, identity, the key hash it was verified against)
        self._cache: dict[str, tuple[float, Identity, str]] = {}

    async def identify(self, header: str | None) -> Identity | None:
        if header is None:
            return None
        cached = self._cache.get(header)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        verified = await self._verify(header, cached)
        if verified is None:
            self._cache.pop(header, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[header] = (now + self._ttl_s, *verified)
        return verified[0]

    async def _verify(
        self, header: str, cached: tuple[float, Identity, str] | None
    ) -> tuple[Identity, str] | None:
        credentials = parse_basic(header)
        if credentials is None:
            return None
        uid, key = credentials
        record = await self._store.get_subject(uid)
        if record is None:
            return None
        # The same hash as when this header was verified: the key is still right.
        if (cached is None or cached[2] != record.key_hash) and not verify_key(
            key, record.key_hash
        ):
            return None
        identity = Identity(
            record.namespace, record.subject, record.uuid, f"{uid}:{key}", dict(record.limits)
        )
        return identity, record.key_hash

    def forget(self) -> None:
        """Drop every remembered header (after keys change)."""
        self._cache.clear()
