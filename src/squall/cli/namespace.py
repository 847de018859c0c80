"""`squall namespace list|get`: the caller's namespace, its entities and its limits (`wsk
namespace`). Administering namespaces is `squall admin` (cli/admin.py)."""

from __future__ import annotations

import click

from squall.cli.commands import Session, _echo_json, _table, cli, global_options, pass_session


@cli.group("namespace")
def namespace_group() -> None:
    """Work with your namespace."""


@namespace_group.command("list")
@global_options()
@pass_session
def namespace_list(session: Session) -> None:
    """List the namespaces the key may use (OpenWhisk: just its own)."""
    names = session.client().list_namespaces()
    if session.json_output:
        _echo_json(names)
        return
    click.echo("namespaces")
    for name in names:
        click.echo(name)


@namespace_group.command("get")
@global_options()
@pass_session
def namespace_get(session: Session) -> None:
    """List the entities in your namespace, and its limits."""
    client = session.client()
    entities = {
        "actions": client.list_actions(limit=200),
        "triggers": client.list_triggers(limit=200),
        "rules": client.list_rules(limit=200),
    }
    limits = client.namespace_limits()
    if session.json_output:
        _echo_json({**entities, "limits": limits})
        return
    names = client.list_namespaces()
    click.echo(f"Entities in namespace: {names[0] if names else '_'}")
    for collection, items in entities.items():
        click.echo(collection)
        for item in items:
            click.echo(f"/{item.get('namespace', '_')}/{item.get('name', '?')}")
    click.echo("limits")
    click.echo(_table([[key, str(value)] for key, value in sorted(limits.items())]))
