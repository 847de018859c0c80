"""`squall config show` and `squall doctor`: what the configuration is, and whether it works.

Both read the same settings as the server roles (defaults < `--config` file < environment <
flags). A configuration error is a report on stderr and exit status 2 for every command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from squall.cli.commands import cli
from squall.config import InvalidConfiguration, Settings, effective, load_settings
from squall.errors import ConfigurationError

CONFIG_OPTION = click.option(
    "--config", "config_file", type=click.Path(path_type=Path), default=None,
    help="A TOML or YAML settings file (default: $SQUALL_CONFIG, else none).",
)  # fmt: skip


def settings_or_exit(
    config_file: Path | None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
    *,
    as_json: bool = False,
) -> Settings:
    """The validated settings; on a configuration error, the report and exit status 2."""
    try:
        return load_settings(config_file=config_file, flags=flags)
    except ConfigurationError as exc:
        report_configuration_error(exc, as_json=as_json)
        sys.exit(2)


def report_configuration_error(exc: ConfigurationError, *, as_json: bool = False) -> None:
    if as_json:
        problems = exc.problems if isinstance(exc, InvalidConfiguration) else []
        body = {"ok": False, "configuration": [p.to_json() for p in problems] or str(exc)}
        click.echo(json.dumps(body, indent=2))
        return
    click.echo(f"error: {exc}", err=True)
    click.echo("Nothing was started: fix the configuration and run again (`squall config show` "
               "prints every setting and its source).", err=True)  # fmt: skip


@cli.group("config")
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_show(config_file: Path | None, as_json: bool) -> None:
    """Every setting, its value (secrets masked) and where the value came from."""
    settings = settings_or_exit(config_file, as_json=as_json)
    rows = effective(settings)
    if as_json:
        click.echo(json.dumps({"settings": rows}, indent=2))
        return
    width = max(len(row["key"]) for row in rows)
    for row in rows:
        value = row["value"]
        if value is None:
            shown = "(unset)"
        elif isinstance(value, str) and value:
            shown = value
        else:
            shown = json.dumps(value)  # numbers, lists, booleans, and "" visibly
        click.echo(f"{row['key']:<{width}}  {shown}  [{row['source']}]")


@cli.command("doctor")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-sandbox", is_flag=True, help="Skip the sandbox check (no zygote started).")
def doctor(config_file: Path | None, as_json: bool, no_sandbox: bool) -> None:
    """Check the configuration against the real dependencies; one line per check with a fix.

    Exit status: 0 when every check passes, 1 when one fails, 2 for a configuration error.
    """
    from squall.doctor import exit_status, run_doctor

    settings = settings_or_exit(config_file, as_json=as_json)
    # Drivers log each failed attempt; the checks' lines say what matters, once.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    results = asyncio.run(run_doctor(settings, sandbox=not no_sandbox))
    status = exit_status(results)
    if as_json:
        body = {"ok": status == 0, "checks": [result.to_json() for result in results]}
        click.echo(json.dumps(body, indent=2))
    else:
        for result in results:
            click.echo(result.line())
        failed = sum(result.status == "fail" for result in results)
        click.echo(
            f"{len(results) - failed} ok, {failed} failed" if results else "nothing to check"
        )
    sys.exit(status)
