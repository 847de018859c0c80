"""Packages, bindings, sequence components and parameter merging, without a server."""

from __future__ import annotations

import pytest

from squall.config import SystemLimits
from squall.controller.packages import ResolvedAction, merge_parameters
from squall.entities.action import Action, InvalidEntity, build_action
from squall.entities.package import (
    Binding,
    Package,
    PackageKindChange,
    build_package,
)

LIMITS = SystemLimits()
KINDS = frozenset({"python:3"})


def test_package_round_trip_and_update_keeps_omitted_fields() -> None:
    body = {"parameters": [{"key": "a", "value": 1}], "publish": True}
    created = build_package("guest", "tools", body, system=LIMITS, existing=None)
    assert created.to_json()["binding"] == {} and created.version == "0.0.1"
    assert Package.from_json(created.to_json()) == created
    updated = build_package("guest", "tools", {}, system=LIMITS, existing=created)
    assert updated.parameters == created.parameters and updated.publish is True
    assert updated.version == "0.0.2"


def test_bindings_resolve_the_default_namespace_and_cannot_change_kind() -> None:
    binding = build_package(
        "guest",
        "mine",
        {"binding": {"namespace": "_", "name": "tools"}},
        system=LIMITS,
        existing=None,
    )
    assert binding.binding == Binding("guest", "tools")
    assert Package.from_json(binding.to_json()).binding == Binding("guest", "tools")
    plain = build_package("guest", "p", {}, system=LIMITS, existing=None)
    with pytest.raises(PackageKindChange):
        build_package(
            "guest",
            "p",
            {"binding": {"namespace": "x", "name": "y"}},
            system=LIMITS,
            existing=plain,
        )
    with pytest.raises(PackageKindChange):
        build_package("guest", "mine", {"binding": {}}, system=LIMITS, existing=binding)
    kept = build_package("guest", "mine", {"parameters": []}, system=LIMITS, existing=binding)
    assert kept.binding == binding.binding


@pytest.mark.parametrize(
    "body",
    [
        {"binding": "tools"},
        {"binding": {"namespace": "guest"}},
        {"binding": {"namespace": "gu$est", "name": "x"}},
        {"parameters": {"a": 1}},
    ],
)
def test_bad_package_bodies(body: object) -> None:
    with pytest.raises(InvalidEntity):
        build_package("guest", "p", body, system=LIMITS, existing=None)
    with pytest.raises(InvalidEntity, match="reserved"):
        build_package("guest", "default", {}, system=LIMITS, existing=None)


def test_sequence_components_are_fully_qualified() -> None:
    body = {"exec": {"kind": "sequence", "components": ["a", "pkg/b", "/_/c", "/other/p/d"]}}
    action = build_action("guest/pkg", "seq", body, kinds=KINDS, system=LIMITS, existing=None)
    assert action.components == ["/guest/a", "/guest/pkg/b", "/guest/c", "/other/p/d"]
    view = action.to_json()
    assert view["exec"] == {"kind": "sequence", "components": action.components}
    assert Action.from_json(view).components == action.components
    # An update without `exec` keeps the components.
    same = build_action(
        "guest/pkg", "seq", {"parameters": []}, kinds=KINDS, system=LIMITS, existing=action
    )
    assert same.components == action.components and same.is_sequence


@pytest.mark.parametrize("components", [None, [], "a", [1], ["/only"], ["a/b/c/d"]])
def test_bad_components(components: object) -> None:
    with pytest.raises(InvalidEntity):
        build_action(
            "guest",
            "s",
            {"exec": {"kind": "sequence", "components": components}},
            kinds=KINDS,
            system=LIMITS,
            existing=None,
        )


def test_merge_parameters_later_layers_win() -> None:
    merged = merge_parameters(
        [{"key": "a", "value": 1}, {"key": "b", "value": 1}],
        [{"key": "b", "value": 2}],
        [{"key": "a", "value": 3, "init": True}],
    )
    assert merged == [{"key": "b", "value": 2}, {"key": "a", "value": 3, "init": True}]


def test_final_fixes_only_parameters_with_values() -> None:
    body = {
        "exec": {"kind": "python:3", "code": "def main(a):\n    return a\n"},
        "parameters": [{"key": "set", "value": 1}, {"key": "unset", "value": None}],
        "annotations": [{"key": "final", "value": True}],
    }
    action = build_action("guest", "f", body, kinds=KINDS, system=LIMITS, existing=None)
    assert ResolvedAction(action, 1).immutable_parameters() == {"set"}
    body["annotations"] = []
    plain = build_action("guest", "f", body, kinds=KINDS, system=LIMITS, existing=None)
    assert ResolvedAction(plain, 1).immutable_parameters() == frozenset()
