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


class TooManyFailures(Exception):
    """A client failed to authenticate too often; it may try again after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class FailureThrottle:
    """A token bucket of failed authentications per client address.

    Guessing keys costs the guesser: past `burst` failures a client gets one attempt per
    `1 / refill_per_s` seconds, answered 429 otherwise, without a key derivation (so guessing
    cannot burn the controller's CPU either). It is per address, not per namespace: an attacker
    hammering a namespace's uuid slows down only itself, never the key's owner.
    """

    def __init__(
        self, *, burst: int = 10, refill_per_s: float = 1.0, max_clients: int = 10_000
    ) -> None:
        self._burst, self._refill, self._max = float(burst), refill_per_s, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._refill)

    def check(self, client: str, now: float) -> None:
        """Raise TooManyFailures when `client` has no attempt left."""
        tokens = self._tokens(client, now)
        if tokens < 1.0:
            raise TooManyFailures((1.0 - tokens) / self._refill)

    def failed(self, client: str, now: float) -> None:
        if len(self._buckets) >= self._max and client not in self._buckets:
            self._forget_refilled(now)
        self._buckets[client] = (self._tokens(client, now) - 1.0, now)

    def _forget_refilled(self, now: float) -> None:
        full = [c for c in self._buckets if self._tokens(c, now) >= self._burst]
        for client in full or list(self._buckets)[: self._max // 2]:
            del self._buckets[client]


class Authenticator:
    """Turns an Authorization header into an Identity, or None."""

    def __init__(
        self,
        store: EntityStore,
        throttle: FailureThrottle | None = None,
        *,
        ttl_s: float = _CACHE_TTL_S,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        # header -> (fresh until, identity, the key hash it was verified against)
        self._cache: dict[str, tuple[float, Identity, str]] = {}
        self._throttle = throttle or FailureThrottle()
        # Digests of headers that verified once: their owner is let through a throttled address.
        self._known_good: set[bytes] = set()

    async def identify(self, header: str | None, client: str | None = None) -> Identity | None:
        """The caller's identity; None for wrong credentials; TooManyFailures when `client`
        (its address) failed too often and the header is not one known to be good."""
        if header is None:
            return None
        cached = self._cache.get(header)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        digest = hashlib.sha256(header.encode()).digest()
        if client is not None and digest not in self._known_good:
            self._throttle.check(client, now)
        verified = await self._verify(header, cached)
        if verified is None:
            self._cache.pop(header, None)
            if client is not None:
                self._throttle.failed(client, now)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        if len(self._known_good) > 100_000:
            self._known_good.clear()
        self._cache[header] = (now + self._ttl_s, *verified)
        self._known_good.add(digest)
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
        # Known-good digests stay: they only exempt a header from the throttle; a revoked key
        # still fails verification.
        self._cache.clear()
