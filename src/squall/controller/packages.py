"""Packages, bindings, and resolving an action path through them with OpenWhisk's entitlement.

An action path `/ns/pkg/name` can name an action of a package of the caller's namespace, of a
published package of another namespace, or of the package a binding aliases. Resolution
merges the parameters in OpenWhisk's order: package < binding < action (the invoke request
comes last, in the controller).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from squall.abc import EntityStore
from squall.config import SystemLimits
from squall.controller.errors import (
    ALREADY_EXISTS,
    CONCURRENT_MODIFICATION,
    NOT_FOUND,
    ApiError,
    not_authorized,
)
from squall.entities.action import Action, EntityTooLarge, InvalidEntity
from squall.entities.names import EntityPath
from squall.entities.package import Package, PackageKindChange, build_package
from squall.errors import ConflictError

ACTIONS = "actions"
PACKAGES = "packages"
BINDING_MISSING = "Binding references a package that does not exist."
BINDING_OF_BINDING = "Cannot bind to another package binding."
NOT_IN_BINDING = "Actions cannot be created in a package binding."
# Deleting a package with `force` removes at most this many actions per store page.
_DELETE_PAGE = 200

ActionGetter = Callable[[EntityPath], Awaitable[tuple[int, Action]]]


def package_not_empty(count: int) -> str:
    noun = "entity" if count == 1 else "entities"
    return (
        f"Package not empty (contains {count} {noun}). Set force param or delete package contents."
    )


@dataclass(slots=True, frozen=True)
class ResolvedAction:
    """An action ready to invoke: its parameters merged, and how the caller reached it."""

    action: Action  # `namespace` is where it is stored (`provider/pkg`)
    revision: int
    binding: str | None = None  # `guest/mybinding` when reached through a binding

    def immutable_parameters(self) -> frozenset[str]:
        """OpenWhisk's `final` annotation: every parameter with a value is fixed."""
        if self.action.annotation("final") is not True:
            return frozenset()
        return frozenset(p["key"] for p in self.action.parameters if p.get("value") is not None)


def merge_parameters(*layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`[{key, value}]` lists merged, a later layer's key replacing an earlier one's."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for entry in layer:
            merged.pop(entry["key"], None)  # the winner takes the later position too
            merged[entry["key"]] = entry
    return list(merged.values())


class Packages:
    """Package CRUD and action resolution over the entity store."""

    def __init__(self, entities: EntityStore, limits: SystemLimits, get_action: ActionGetter):
        self._entities, self._limits, self._get_action = entities, limits, get_action
        self._cache: dict[tuple[str, str], Package] = {}

    # -- reading ---------------------------------------------------------------------------

    async def find(self, namespace: str, name: str) -> Package | None:
        cached = self._cache.get((namespace, name))
        if cached is not None:
            return cached
        stored = await self._entities.get(PACKAGES, namespace, name)
        if stored is None:
            return None
        package = Package.from_json(stored.doc)
        self._cache[(namespace, name)] = package
        return package

    async def readable(self, caller: str, namespace: str, name: str) -> Package:
        """A package the caller may read: its own, or a published one of another namespace.

        Another namespace's missing and unpublished packages both answer 403, so their
        names do not leak.
        """
        package = await self.find(namespace, name)
        if namespace != caller:
            if package is None or not package.publish:
                raise ApiError(403, not_authorized(f"{namespace}/{name}"))
        elif package is None:
            raise ApiError(404, NOT_FOUND)
        return package

    async def view(self, caller: str, namespace: str, name: str) -> dict[str, Any]:
        """GET: a binding shows the bound package's parameters under its own, and its actions."""
        package = await self.readable(caller, namespace, name)
        view = package.to_json()
        contents_of = package
        if package.binding is not None:
            target = await self.find(package.binding.namespace, package.binding.name)
            if target is not None:
                view["parameters"] = merge_parameters(target.parameters, package.parameters)
                contents_of = target
        actions = [
            Action.from_json(s.doc)
            for s in await self._entities.list(
                ACTIONS, contents_of.qualified, limit=self._limits.query_limit
            )
        ]
        summary = [
            {"name": a.name, "version": a.version, "annotations": a.annotations} for a in actions
        ]
        view["actions"] = [s for s, a in zip(summary, actions, strict=True) if not _is_feed(a)]
        view["feeds"] = [s for s, a in zip(summary, actions, strict=True) if _is_feed(a)]
        return view

    async def list_packages(
        self, caller: str, namespace: str, *, skip: int, limit: int
    ) -> list[dict[str, Any]]:
        """Another namespace's listing shows only its published packages."""
        stored = await self._entities.list(PACKAGES, namespace, skip=skip, limit=limit)
        packages = [Package.from_json(s.doc) for s in stored]
        if namespace != caller:
            packages = [p for p in packages if p.publish]
        return [p.brief() for p in packages]

    # -- writing ---------------------------------------------------------------------------

    async def put(self, path: EntityPath, body: Any, overwrite: bool) -> Package:
        existing = await self._entities.get(PACKAGES, path.namespace, path.name)
        if existing is not None and not overwrite:
            raise ApiError(409, ALREADY_EXISTS)
        previous = Package.from_json(existing.doc) if existing else None
        try:
            package = build_package(
                path.namespace, path.name, body, system=self._limits, existing=previous
            )
        except InvalidEntity as exc:
            raise ApiError(400, str(exc)) from exc
        except EntityTooLarge as exc:
            raise ApiError(413, str(exc)) from exc
        except PackageKindChange as exc:
            raise ApiError(409, str(exc)) from exc
        if package.binding is not None and (previous is None or "binding" in body):
            await self._check_binding(path.namespace, package)
        revision = existing.revision if existing else None
        try:
            await self._entities.put(
                PACKAGES, path.namespace, path.name, package.to_json(), revision
            )
        except ConflictError as exc:
            message = ALREADY_EXISTS if existing is None else CONCURRENT_MODIFICATION
            raise ApiError(409, message) from exc
        finally:
            self._cache.pop((path.namespace, path.name), None)
        return package

    async def _check_binding(self, caller: str, package: Package) -> None:
        assert package.binding is not None
        target = await self.find(package.binding.namespace, package.binding.name)
        if target is None:
            raise ApiError(400, BINDING_MISSING)
        if target.namespace != caller and not target.publish:
            raise ApiError(403, not_authorized(target.qualified))
        if target.binding is not None:
            raise ApiError(400, BINDING_OF_BINDING)

    async def delete(self, path: EntityPath, *, force: bool) -> Package:
        """Delete a package; with `force`, its actions first (else 409 when it has any)."""
        stored = await self._entities.get(PACKAGES, path.namespace, path.name)
        if stored is None:
            raise ApiError(404, NOT_FOUND)
        package = Package.from_json(stored.doc)
        contained = await self._entities.count(ACTIONS, package.qualified)
        if contained and not force:
            raise ApiError(409, package_not_empty(contained))
        while contained:  # bounded: every page deletes what it lists
            page = await self._entities.list(ACTIONS, package.qualified, limit=_DELETE_PAGE)
            for action in page:
                await self._entities.delete(ACTIONS, action.namespace, action.name)
            contained = len(page) if len(page) == _DELETE_PAGE else 0
        self._cache.pop((path.namespace, path.name), None)
        try:
            deleted = await self._entities.delete(
                PACKAGES, path.namespace, path.name, stored.revision
            )
        except ConflictError as exc:
            raise ApiError(409, CONCURRENT_MODIFICATION) from exc
        if not deleted:
            raise ApiError(404, NOT_FOUND)
        return package

    async def require_container(self, path: EntityPath) -> None:
        """An action may be written only into an existing package of its own (not a binding)."""
        if path.package is None:
            return
        package = await self.find(path.namespace, path.package)
        if package is None:
            raise ApiError(404, NOT_FOUND)
        if package.binding is not None:
            raise ApiError(400, NOT_IN_BINDING)

    def forget(self) -> None:
        self._cache.clear()

    # -- resolving actions -----------------------------------------------------------------

    async def resolve(self, caller: str, path: EntityPath) -> ResolvedAction:
        """The action at `path` as namespace `caller` may invoke or read it, params merged.

        403 for another namespace's action outside a published package; 404 when the package,
        the bound package or the action does not exist.
        """
        if path.package is None:
            if path.namespace != caller:
                raise ApiError(403, not_authorized(path.qualified))
            revision, action = await self._get_action(path)
            return ResolvedAction(action, revision)
        package = await self.readable(caller, path.namespace, path.package)
        binding: str | None = None
        layers = [package.parameters]
        if package.binding is not None:
            binding = package.qualified
            target = await self.find(package.binding.namespace, package.binding.name)
            if target is None:
                raise ApiError(404, NOT_FOUND)
            if target.namespace != caller and not target.publish:
                raise ApiError(403, not_authorized(target.qualified))
            layers = [target.parameters, package.parameters]
            package = target
        revision, action = await self._get_action(
            EntityPath(package.namespace, package.name, path.name)
        )
        if any(layers):
            merged = merge_parameters(*layers, action.parameters)
            action = dataclasses.replace(action, parameters=merged)
        return ResolvedAction(action, revision, binding)


def _is_feed(action: Action) -> bool:
    return action.annotation("feed") is not None
