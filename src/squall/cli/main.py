"""The `squall` command: client commands in the shape of `wsk`, plus the server roles."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import click

from squall.cli import admin as _admin_commands  # noqa: F401  (registers `squall admin`)
from squall.cli import namespace as _namespace_commands  # noqa: F401  (`squall namespace`)
from squall.cli import ops as _ops_commands  # noqa: F401  (registers `config`, `doctor`)
from squall.cli import store as _store_commands  # noqa: F401  (registers `squall store`)
from squall.cli.commands import cli
from squall.cli.ops import CONFIG_OPTION, report_configuration_error, settings_or_exit
from squall.cluster.placement import ALL_ROLES, Role
from squall.errors import ConfigurationError, SquallError


@click.command("standalone")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 3233).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the database and keys live (default ~/.squall).",
)
@CONFIG_OPTION
def standalone(
    host: str | None, port: int | None, data_dir: Path | None, config_file: Path | None
) -> None:
    """Run the whole platform in one process: API, scheduler and invoker."""
    flags = {
        "host": (host, "--host"),
        "port": (port, "--port"),
        "data_dir": (data_dir, "--data-dir"),
    }
    _serve(config_file, flags, ALL_ROLES)


def _serve(
    config_file: Path | None, flags: Mapping[str, tuple[object, str]], roles: frozenset[Role]
) -> None:
    from squall.standalone import run

    settings = settings_or_exit(config_file, flags)
    try:
        run(settings, roles)
    except ConfigurationError as exc:  # found at start (e.g. a missing driver): not retried
        report_configuration_error(exc)
        sys.exit(2)
    except SquallError as exc:  # e.g. a database schema newer than this Squall: one line
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


cli.add_command(standalone)


def _role_command(role: Role) -> click.Command:
    @click.command(role, help=ROLE_HELP[role])
    @click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
    @click.option("--port", type=int, default=None, help="Port to listen on (default 3233).")
    @click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                  help="Where this process keeps its crash journal (default ~/.squall).")
    @click.option("--id", "member", default=None,
                  help="Member id, unique per role (default: role-hostname).")
    @CONFIG_OPTION
    def command(host: str | None, port: int | None, data_dir: Path | None, member: str | None,
                config_file: Path | None) -> None:  # fmt: skip
        flags = {"host": (host, "--host"), "port": (port, "--port"),
                 "data_dir": (data_dir, "--data-dir"), "cluster.id": (member, "--id")}  # fmt: skip
        _serve(config_file, flags, frozenset({role}))

    return command


ROLE_HELP: dict[Role, str] = {
    "controller": "Run a controller: the OpenWhisk API, sending activations over Kafka.",
    "scheduler": "Run a scheduler: action queues and alarm timers, owned through etcd.",
    "invoker": "Run an invoker: containers pulling activations from the schedulers.",
}
for _role in ROLE_HELP:
    cli.add_command(_role_command(_role))


def main() -> None:
    cli(prog_name="squall")


if __name__ == "__main__":
    main()
