"""Squall's exception tree.

Every backend error is translated at its adapter into one of these, chaining the original, with
a message that names the setting involved. The controller maps them to HTTP statuses.
"""

from __future__ import annotations


class SquallError(Exception):
    """Base of every error Squall raises on purpose."""


class ConfigurationError(SquallError):
    """The configuration is wrong; retrying will not help. Exit status 2."""


class DependencyUnavailable(SquallError):
    """A dependency (store, bus, coordination) cannot be reached right now; retry with backoff."""

    transient = True


class StoreError(SquallError):
    """A store failed in a way that is not the caller's fault."""


class ConflictError(SquallError):
    """A write raced with another write, or the entity already exists."""


class NotFoundError(SquallError):
    """The entity does not exist."""


class SandboxError(SquallError):
    """The sandbox machinery (not the action) failed."""


class QueueGone(SquallError):
    """A scheduler queue was removed; a container pulling from it should stop."""
