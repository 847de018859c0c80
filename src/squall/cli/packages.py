"""`squall package`: create, update, bind, get, list and delete packages, as `wsk package`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from squall.cli.client import JSON, WhiskError, split_name
from squall.cli.commands import (
    Session,
    _annotations,
    _echo_json,
    _json_file_option,
    _key_value_list,
    _key_values,
    _ok,
    _table,
    cli,
    global_options,
    list_options,
    param_options,
    pass_session,
)


@cli.group("package")
def package_group() -> None:
    """Create, bind, inspect and delete packages."""


def package_put_options(f: Any) -> Any:
    decorators = [
        param_options,
        click.option(
            "-a",
            "--annotation",
            type=(str, str),
            multiple=True,
            metavar="KEY VALUE",
            help="Annotation; VALUE parsed like -p values.",
        ),
        _json_file_option("-A", "--annotation-file", help="JSON object file of annotations."),
    ]
    for decorate in reversed(decorators):
        f = decorate(f)
    return f


def package_body(
    param: tuple[tuple[str, str], ...],
    param_file: Path | None,
    annotation: tuple[tuple[str, str], ...],
    annotation_file: Path | None,
    shared: str | None = None,
) -> JSON:
    """The PackagePut body: only what was given, so an update keeps everything else."""
    body: JSON = {}
    parameters = _key_values(param_file, param)
    annotations = _key_values(annotation_file, annotation)
    if parameters:
        body["parameters"] = parameters
    if annotations:
        body["annotations"] = annotations
    if shared is not None:
        body["publish"] = shared.lower() in ("yes", "true")
    return body


_SHARED = click.option(
    "--shared",
    type=click.Choice(("yes", "no", "true", "false"), case_sensitive=False),
    help="Publish the package: other namespaces may read, bind and invoke it.",
)


@package_group.command("create")
@click.argument("name")
@package_put_options
@_SHARED
@global_options()
@pass_session
def package_create(session: Session, /, name: str, **options: Any) -> None:
    """Create package NAME."""
    session.client().put_package(name, package_body(**options))
    _ok(session, f"created package {name}")


@package_group.command("update")
@click.argument("name")
@package_put_options
@_SHARED
@global_options()
@pass_session
def package_update(session: Session, /, name: str, **options: Any) -> None:
    """Update (or create) package NAME; only the given settings change."""
    session.client().put_package(name, package_body(**options), overwrite=True)
    _ok(session, f"updated package {name}")


@package_group.command("bind")
@click.argument("package")
@click.argument("name")
@package_put_options
@global_options()
@pass_session
def package_bind(session: Session, /, package: str, name: str, **options: Any) -> None:
    """Create binding NAME to PACKAGE (`/namespace/package` for another namespace's)."""
    client = session.client()
    try:
        namespace, parts = split_name(package, client.namespace)
    except WhiskError as exc:
        raise click.UsageError(str(exc)) from exc
    if len(parts) != 1:
        raise click.UsageError(f"'{package}' is not a package name")
    body = package_body(**options)
    body["binding"] = {"namespace": namespace, "name": parts[0]}
    client.put_package(name, body)
    _ok(session, f"created binding {name}")


@package_group.command("get")
@click.argument("name")
@click.option("-s", "--summary", is_flag=True, help="Only the package's parameters and actions.")
@global_options()
@pass_session
def package_get(session: Session, name: str, summary: bool) -> None:
    """Show package NAME (a binding shows the bound package's actions)."""
    package = session.client().get_package(name)
    if summary and not session.json_output:
        click.echo(_package_summary(package))
        return
    _ok(session, f"got package {name}")
    _echo_json(package)


def _package_summary(package: JSON) -> str:
    path = f"/{package.get('namespace', '_')}/{package.get('name', '?')}"
    description = _annotations(package).get("description")
    names = ", ".join(str(p.get("key")) for p in _key_value_list(package.get("parameters")))
    lines = [
        f"package {path}: {description}" if description else f"package {path}",
        f"   (parameters: {names or 'none defined'})",
    ]
    for action in _key_value_list(package.get("actions")):
        lines.append(f" action {path}/{action.get('name', '?')}")
    return "\n".join(lines)


@package_group.command("list")
@click.argument("namespace", required=False)
@list_options("packages")
@global_options()
@pass_session
def package_list(
    session: Session, namespace: str | None, limit: int | None, skip: int | None
) -> None:
    """List packages, or NAMESPACE's published packages."""
    packages = session.client().list_packages(
        namespace.strip("/") if namespace else None, limit=limit, skip=skip
    )
    if session.json_output:
        _echo_json(packages)
        return
    rows = [
        [
            f"/{p.get('namespace', '_')}/{p.get('name', '?')}",
            "shared" if p.get("publish") else "private",
            "binding" if p.get("binding") else "",
        ]
        for p in packages
    ]
    click.echo("packages")
    if rows:
        click.echo(_table(rows))


@package_group.command("delete")
@click.argument("name")
@click.option("-f", "--force", is_flag=True, help="Delete the package's actions first.")
@global_options()
@pass_session
def package_delete(session: Session, name: str, force: bool) -> None:
    """Delete package NAME (it must be empty unless --force)."""
    session.client().delete_package(name, force=force)
    _ok(session, f"deleted package {name}")
