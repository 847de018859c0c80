"""The client subcommands of `squall`, shaped like `wsk`: `property`, `action`, `trigger`,
`rule`, `activation` (and `package`, from cli/packages.py).

`cli` is the root group. Importing this module has no side effects: server-side commands
(`standalone`, `admin`, ...) are attached elsewhere with `cli.add_command(...)`.

Everything a command needs from the outside comes through `Session` (the click context
object): how to build the `WhiskClient`, and the clock and sleep used by `activation poll`.
Tests pass their own `Session(client_factory=...)` as `obj=` to swap the network out.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NoReturn, Protocol, TypeVar

import click

from squall import __version__
from squall.cli.client import (
    JSON,
    Invocation,
    Log,
    WhiskClient,
    WhiskError,
    WhiskUnreachable,
    qualified_name,
    split_name,
)
from squall.cli.properties import (
    APIHOST_KEY,
    AUTH_KEY,
    PropertiesError,
    Settings,
    check_auth,
    config_path,
    mask_auth,
    normalize_apihost,
    resolve,
    write_properties,
)

F = TypeVar("F", bound=Callable[..., Any])

POLL_INTERVAL_S = 1.0
# Records are listed by start time but stored when they end, so poll looks back as far as the
# longest action may run (OpenWhisk's max timeout, 300 s) plus slack to catch late arrivals.
POLL_LOOKBACK_MS = 330_000
MAX_LIST_LIMIT = 200
STATUS_NAMES = {0: "success", 1: "application error", 2: "developer error", 3: "internal error"}
KIND_BY_SUFFIX = {".py": "python:default"}
WEB_CHOICES = ("true", "false", "yes", "no", "raw")
BINARY_SUFFIXES = frozenset({".zip", ".jar"})
# "<ISO timestamp> stdout: line" — what `--strip` removes.
LOG_PREFIX = re.compile(r"^\S+\s+std(?:out|err):\s?")
UNREACHABLE_HINT = "(is 'squall standalone' running?)"
FEED_ANNOTATION = "feed"


# ---------------------------------------------------------------------------------- session


class ClientFactory(Protocol):
    def __call__(self, apihost: str, auth: str, *, log: Log | None) -> WhiskClient: ...


def default_client_factory(apihost: str, auth: str, *, log: Log | None) -> WhiskClient:
    return WhiskClient(apihost, auth, log=log)


@dataclass
class Session:
    """Per-invocation state: global options, and the seams tests replace."""

    client_factory: ClientFactory = default_client_factory
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    apihost: str | None = None
    auth: str | None = field(default=None, repr=False)
    json_output: bool = False
    verbose: bool = False
    _client: WhiskClient | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        return resolve(apihost=self.apihost, auth=self.auth)

    def client(self) -> WhiskClient:
        """Built on first use, so `property` commands work without any settings."""
        if self._client is None:
            apihost, auth = self.settings().require()
            log = _stderr_line if self.verbose else None
            self._client = self.client_factory(apihost, auth, log=log)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


pass_session = click.make_pass_decorator(Session, ensure=True)


class CliError(click.ClickException):
    """Shown as the single line `error: <message>`, exit status 1, as wsk does."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class SquallGroup(click.Group):
    """Root group: turns the client's errors into one readable line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WhiskUnreachable as exc:
            raise CliError(f"{exc} {UNREACHABLE_HINT}") from exc
        except (WhiskError, PropertiesError) as exc:
            raise CliError(str(exc)) from exc


def _set_session_value(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # Global options are accepted after the subcommand too (`squall action list -v`), as wsk
    # does; only a value actually given overrides what the root group already recorded.
    if value and param.name:
        setattr(ctx.ensure_object(Session), param.name, value)


def global_options(*, connection: bool = True) -> Callable[[F], F]:
    """Repeat the root group's options on a leaf command."""

    def decorate(f: F) -> F:
        options = [
            click.option(
                "--json",
                "json_output",
                is_flag=True,
                expose_value=False,
                callback=_set_session_value,
                help="Print raw JSON.",
            ),
            click.option(
                "-v",
                "--verbose",
                is_flag=True,
                expose_value=False,
                callback=_set_session_value,
                help="Print each request's method, URL and status to stderr.",
            ),
        ]
        if connection:
            options += [
                click.option(
                    "--apihost",
                    metavar="HOST",
                    expose_value=False,
                    callback=_set_session_value,
                    help="API host to use.",
                ),
                click.option(
                    "--auth",
                    metavar="UUID:KEY",
                    expose_value=False,
                    callback=_set_session_value,
                    help="Auth key to use.",
                ),
            ]
        for option in reversed(options):  # so --help lists them in this order
            f = option(f)
        return f

    return decorate


@click.group("squall", cls=SquallGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--apihost",
    metavar="HOST",
    help="API host (overrides SQUALL_APIHOST and APIHOST in the properties file).",
)
@click.option(
    "--auth",
    metavar="UUID:KEY",
    help="Auth key (overrides SQUALL_AUTH and AUTH in the properties file).",
)
@click.option(
    "--json", "json_output", is_flag=True, help="Print raw JSON instead of tables and messages."
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Print each request's method, URL and status to stderr (never the key).",
)
@click.version_option(__version__, prog_name="squall")
@click.pass_context
def cli(
    ctx: click.Context, apihost: str | None, auth: str | None, json_output: bool, verbose: bool
) -> None:
    """Squall, an OpenWhisk-compatible serverless platform: the `wsk`-like client."""
    session = ctx.ensure_object(Session)
    session.apihost = apihost or session.apihost
    session.auth = auth or session.auth
    session.json_output = json_output or session.json_output
    session.verbose = verbose or session.verbose
    ctx.call_on_close(session.close)


# --------------------------------------------------------------------------------- property


@cli.group("property")
def property_group() -> None:
    """Show or set the API host and auth key (the ~/.wskprops file)."""


@property_group.command("set")
@click.option("--apihost", metavar="HOST", help="API host to store, e.g. 127.0.0.1:3233.")
@click.option("--auth", metavar="UUID:KEY", help="Auth key to store.")
@global_options(connection=False)
def property_set(apihost: str | None, auth: str | None) -> None:
    """Store the API host and/or auth key in the properties file (mode 0600)."""
    if not apihost and not auth:
        raise click.UsageError("give --apihost and/or --auth")
    updates: dict[str, str] = {}
    if apihost:
        normalize_apihost(apihost)  # rejects an empty host before anything is written
        updates[APIHOST_KEY] = apihost.strip()
    if auth:
        updates[AUTH_KEY] = check_auth(auth.strip())
    write_properties(config_path(), updates)
    if apihost:
        click.echo(f"ok: squall API host set to {apihost.strip()}")
    if auth:
        click.echo("ok: squall auth set. Run 'squall property get --show-key' to see it.")


@property_group.command("get")
@click.option("--show-key", is_flag=True, help="Print the auth key unmasked.")
@global_options()
@pass_session
def property_get(session: Session, show_key: bool) -> None:
    """Show the effective API host and auth key, and where each comes from."""
    settings = session.settings()
    apihost = _display_apihost(settings.apihost)
    auth = settings.auth if show_key or not settings.auth else mask_auth(settings.auth)
    if session.json_output:
        _echo_json(
            {
                "apihost": apihost,
                "apihost_source": settings.apihost_source,
                "auth": auth,
                "auth_source": settings.auth_source,
                "config_file": str(settings.path),
            }
        )
        return
    rows = [
        ["squall API host", apihost or "(unset)", _source(settings.apihost_source)],
        ["squall auth", auth or "(unset)", _source(settings.auth_source)],
        ["properties file", str(settings.path), ""],
    ]
    click.echo(_table(rows))


def _source(source: str) -> str:
    return "" if source == "unset" else f"(from {source})"


def _display_apihost(apihost: str | None) -> str | None:
    try:
        return normalize_apihost(apihost) if apihost else None
    except PropertiesError:
        return apihost


# ----------------------------------------------------------------------------------- action


@cli.group("action")
def action_group() -> None:
    """Create, inspect, invoke and delete actions."""


@dataclass(frozen=True)
class ActionOptions:
    """The options `action create` and `action update` share (names are click's)."""

    kind: str | None
    main: str | None
    param: tuple[tuple[str, str], ...]
    param_file: Path | None
    annotation: tuple[tuple[str, str], ...]
    annotation_file: Path | None
    timeout: int | None
    memory: int | None
    logsize: int | None
    concurrency: int | None
    sequence: str | None = None
    web: str | None = None
    web_secure: str | None = None


def _json_file_option(*decls: str, help: str) -> Callable[[F], F]:
    kind = click.Path(exists=True, dir_okay=False, path_type=Path)
    return click.option(*decls, type=kind, metavar="FILE", help=help)


def param_options(f: F) -> F:
    """`-p KEY VALUE` (repeatable) and `-P FILE`."""
    f = _json_file_option("-P", "--param-file", help="JSON object file of parameters.")(f)
    return click.option(
        "-p",
        "--param",
        type=(str, str),
        multiple=True,
        metavar="KEY VALUE",
        help="Parameter; VALUE is parsed as JSON when it is valid JSON, else kept as a string.",
    )(f)


def action_put_options(f: F) -> F:
    ints = click.IntRange(min=0)
    decorators = [
        click.option(
            "--kind",
            metavar="KIND",
            help="Runtime kind, e.g. python:default (inferred from .py files).",
        ),
        click.option("--main", metavar="NAME", help="Entry point function (default main)."),
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
        click.option("-t", "--timeout", type=ints, metavar="MS", help="Time limit in ms."),
        click.option("-m", "--memory", type=ints, metavar="MB", help="Memory limit in MB."),
        click.option("-l", "--logsize", type=ints, metavar="MB", help="Log size limit in MB."),
        click.option(
            "-c",
            "--concurrency",
            type=ints,
            metavar="N",
            help="Activations one container may run at once.",
        ),
        click.option(
            "--sequence",
            metavar="A,B,...",
            help="Make a sequence of these actions (comma-separated) instead of code.",
        ),
        click.option(
            "--web",
            type=click.Choice(WEB_CHOICES, case_sensitive=False),
            help="Expose as a web action (raw: the request body and query stay unparsed).",
        ),
        click.option(
            "--web-secure",
            metavar="SECRET",
            help="Require X-Require-Whisk-Auth: SECRET on web requests ('true': credentials, "
            "'false': nothing).",
        ),
    ]
    for decorate in reversed(decorators):
        f = decorate(f)
    return f


@action_group.command("create")
@click.argument("name")
@click.argument(
    "file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@action_put_options
@global_options()
@pass_session
def action_create(session: Session, /, name: str, file: Path | None, **options: Any) -> None:
    """Create action NAME from FILE (.py source, or a .zip with --kind), or a --sequence."""
    opts = ActionOptions(**options)
    if file is None and opts.sequence is None:
        raise click.UsageError("give the action's FILE, or --sequence A,B")
    client = session.client()
    client.put_action(name, action_body(file, opts, client.namespace))
    _ok(session, f"created action {name}")


@action_group.command("update")
@click.argument("name")
@click.argument(
    "file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@action_put_options
@global_options()
@pass_session
def action_update(session: Session, /, name: str, file: Path | None, **options: Any) -> None:
    """Update (or create) action NAME; without FILE only the given settings change."""
    client = session.client()
    client.put_action(name, action_body(file, ActionOptions(**options), client.namespace),
                      overwrite=True)  # fmt: skip
    _ok(session, f"updated action {name}")


def action_body(file: Path | None, options: ActionOptions, namespace: str = "_") -> JSON:
    """The ActionPut body: only what was given, so an update keeps everything else."""
    body: JSON = {}
    if options.sequence is not None:
        if file is not None or options.kind or options.main:
            raise click.UsageError("--sequence takes no FILE, --kind or --main")
        body["exec"] = sequence_exec(options.sequence, namespace)
    elif file is not None:
        body["exec"] = exec_from_file(file, options.kind, options.main)
    elif options.kind or options.main:
        raise click.UsageError("--kind and --main need a FILE")
    parameters = _key_values(options.param_file, options.param)
    annotations = _key_values(options.annotation_file, options.annotation)
    annotations += web_annotations(options.web, options.web_secure)
    limits = {
        "timeout": options.timeout,
        "memory": options.memory,
        "logs": options.logsize,
        "concurrency": options.concurrency,
    }
    if parameters:
        body["parameters"] = parameters
    if annotations:
        body["annotations"] = annotations
    if any(v is not None for v in limits.values()):
        body["limits"] = {k: v for k, v in limits.items() if v is not None}
    return body


def sequence_exec(components: str, namespace: str) -> JSON:
    """wsk's `--sequence a,b`: every component fully qualified (`/_/a`)."""
    names = [c.strip() for c in components.split(",") if c.strip()]
    if not names:
        raise click.UsageError("--sequence needs at least one action name")
    try:
        return {"kind": "sequence", "components": [qualified_name(n, namespace) for n in names]}
    except WhiskError as exc:
        raise click.UsageError(str(exc)) from exc


def web_annotations(web: str | None, secure: str | None) -> list[JSON]:
    """wsk's `--web` and `--web-secure` as annotations (`final` comes with `--web`, as there)."""
    out: list[JSON] = []
    if web is not None:
        exported = web.lower() in ("true", "yes", "raw")
        out += [
            {"key": "web-export", "value": exported},
            {"key": "raw-http", "value": web.lower() == "raw"},
            {"key": "final", "value": exported},
        ]
    if secure is not None:
        value: Any = parse_value(secure) if secure.lower() in ("true", "false") else secure
        if value is True:
            value = secrets.randbelow(10**15) + 10**14  # wsk generates a number, too
        out.append({"key": "require-whisk-auth", "value": value})
    return out


def exec_from_file(file: Path, kind: str | None, main: str | None) -> JSON:
    """`exec` for a code file: text as is, archives (and any non-UTF-8 file) as base64."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise click.FileError(str(file), exc.strerror) from exc
    text = None if file.suffix.lower() in BINARY_SUFFIXES else _utf8(data)
    exec_: JSON = {"kind": kind or _infer_kind(file, binary=text is None)}
    if text is None:
        exec_.update(code=base64.b64encode(data).decode("ascii"), binary=True)
    else:
        exec_["code"] = text
    if main:
        exec_["main"] = main
    return exec_


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _infer_kind(file: Path, *, binary: bool) -> str:
    if binary:
        raise click.UsageError(f"{file.name} is an archive; give its runtime with --kind")
    kind = KIND_BY_SUFFIX.get(file.suffix.lower())
    if kind is None:
        raise click.UsageError(f"cannot infer the kind of {file.name}; give it with --kind")
    return kind


def parse_value(text: str) -> Any:
    """wsk's rule for -p/-a values: valid JSON becomes that JSON, anything else a string."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN/Infinity, which are not JSON; keep them as strings instead.
    raise ValueError(name)


def _params(file: Path | None, pairs: Sequence[tuple[str, str]]) -> JSON:
    """File values first, then -p pairs on top (the later one wins, as in wsk)."""
    merged = _load_json_object(file)
    merged.update((key, parse_value(value)) for key, value in pairs)
    return merged


def _key_values(file: Path | None, pairs: Sequence[tuple[str, str]]) -> list[JSON]:
    return [{"key": k, "value": v} for k, v in _params(file, pairs).items()]


def _load_json_object(file: Path | None) -> JSON:
    if file is None:
        return {}
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{file}: {exc}") from exc
    if not isinstance(value, dict):
        raise click.BadParameter(f"{file} must hold a JSON object")
    return value


@action_group.command("get")
@click.argument("name")
@click.option("-s", "--summary", is_flag=True, help="Print a short summary.")
@click.option(
    "--code/--no-code", default=True, show_default=True, help="Include the action's code."
)
@global_options()
@pass_session
def action_get(session: Session, name: str, summary: bool, code: bool) -> None:
    """Show action NAME."""
    action = session.client().get_action(name, code=code and not summary)
    if summary and not session.json_output:
        click.echo(_action_summary(action))
        return
    _ok(session, f"got action {name}")
    _echo_json(action)


def _action_summary(action: JSON) -> str:
    annotations = _annotations(action)
    path = f"/{action.get('namespace', '_')}/{action.get('name', '?')}"
    description = annotations.get("description")
    kind = _action_kind(action)
    names = ", ".join(str(p.get("key")) for p in _key_value_list(action.get("parameters")))
    head = f"action {path}: {description}" if description else f"action {path}"
    return (
        f"{head}\n   (kind: {kind}, version: {action.get('version', '?')})\n"
        f"   (parameters: {names or 'none defined'})"
    )


def list_options(what: str) -> Callable[[F], F]:
    """`--limit N` and `--skip N` of a listing."""

    def decorate(f: F) -> F:
        skip_help = f"Skip the first N {what}."
        f = click.option("-s", "--skip", type=click.IntRange(min=0), metavar="N", help=skip_help)(f)
        return click.option(
            "-l",
            "--limit",
            type=click.IntRange(0, MAX_LIST_LIMIT),
            metavar="N",
            help=f"At most N {what} (default 30).",
        )(f)

    return decorate


@action_group.command("list")
@list_options("actions")
@global_options()
@pass_session
def action_list(session: Session, limit: int | None, skip: int | None) -> None:
    """List actions."""
    actions = session.client().list_actions(limit=limit, skip=skip)
    if session.json_output:
        _echo_json(actions)
        return
    rows = [
        [
            f"/{a.get('namespace', '_')}/{a.get('name', '?')}",
            "shared" if a.get("publish") else "private",
            _action_kind(a),
        ]
        for a in actions
    ]
    click.echo("actions")
    if rows:
        click.echo(_table(rows))


@action_group.command("delete")
@click.argument("name")
@global_options()
@pass_session
def action_delete(session: Session, name: str) -> None:
    """Delete action NAME."""
    session.client().delete_action(name)
    _ok(session, f"deleted action {name}")


@action_group.command("invoke")
@click.argument("name")
@param_options
@click.option("-b", "--blocking", is_flag=True, help="Wait for the activation to finish.")
@click.option(
    "-r", "--result", is_flag=True, help="Wait and print only the result (implies --blocking)."
)
@global_options()
@pass_session
def action_invoke(
    session: Session,
    name: str,
    param: tuple[tuple[str, str], ...],
    param_file: Path | None,
    blocking: bool,
    result: bool,
) -> None:
    """Invoke action NAME; without -b/-r only the activation id is printed."""
    client = session.client()
    invocation = client.invoke_action(
        name, _params(param_file, param), blocking=blocking or result, result=result
    )
    fq_name = qualified_name(name, client.namespace)
    if not invocation.finished:
        _report_accepted(session, fq_name, invocation, waited=blocking or result)
        return
    _echo_json(invocation.body)
    if invocation.failed:
        raise CliError(
            f"action {fq_name} failed: {_failure_status(invocation)} "
            f"(activation {invocation.activation_id})"
        )


def _report_accepted(
    session: Session, fq_name: str, invocation: Invocation, *, waited: bool
) -> None:
    if session.json_output:
        _echo_json(invocation.body)
    else:
        click.echo(f"ok: invoked {fq_name} with id {invocation.activation_id}")
    if waited:
        # The server stops waiting after 60 s and answers 202; the activation carries on.
        _stderr_line(
            "the activation has not finished yet; "
            f"run 'squall activation get {invocation.activation_id}' later"
        )


def _failure_status(invocation: Invocation) -> str:
    body = invocation.body
    response = body.get("response") if isinstance(body, dict) else None
    if isinstance(response, dict) and response.get("status"):
        return str(response["status"])
    return f"HTTP {invocation.status}"


# ---------------------------------------------------------------------------------- trigger


@cli.group("trigger")
def trigger_group() -> None:
    """Create, inspect, fire and delete triggers."""


def trigger_put_options(f: F) -> F:
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
        click.option(
            "--feed",
            metavar="FEED",
            help="Feed action that fires the trigger, e.g. /whisk.system/alarms/alarm; "
            "-p parameters then go to the feed, not the trigger.",
        ),
    ]
    for decorate in reversed(decorators):
        f = decorate(f)
    return f


@dataclass(frozen=True)
class TriggerOptions:
    """The options `trigger create` and `trigger update` share (names are click's)."""

    param: tuple[tuple[str, str], ...]
    param_file: Path | None
    annotation: tuple[tuple[str, str], ...]
    annotation_file: Path | None
    feed: str | None

    def params(self) -> JSON:
        return _params(self.param_file, self.param)

    def annotations(self) -> list[JSON]:
        return _key_values(self.annotation_file, self.annotation)

    def body(self) -> JSON:
        """The TriggerPut body: only what was given, so an update keeps everything else."""
        body: JSON = {}
        parameters = _key_values(self.param_file, self.param)
        annotations = self.annotations()
        if parameters:
            body["parameters"] = parameters
        if annotations:
            body["annotations"] = annotations
        return body


@trigger_group.command("create")
@click.argument("name")
@trigger_put_options
@global_options()
@pass_session
def trigger_create(session: Session, /, name: str, **options: Any) -> None:
    """Create trigger NAME, optionally fed by the feed action FEED."""
    opts = TriggerOptions(**options)
    if opts.feed is None:
        session.client().put_trigger(name, opts.body())
    else:
        _create_feed_trigger(session, name, opts, overwrite=False, existed=False)
    _ok(session, f"created trigger {name}")


@trigger_group.command("update")
@click.argument("name")
@trigger_put_options
@global_options()
@pass_session
def trigger_update(session: Session, /, name: str, **options: Any) -> None:
    """Update (or create) trigger NAME.

    A trigger with a feed is not changed itself: its feed is invoked with lifecycleEvent UPDATE
    and the -p parameters, as wsk does.
    """
    opts = TriggerOptions(**options)
    client = session.client()
    existing = _trigger_or_none(client, name)
    current_feed = _annotations(existing).get(FEED_ANNOTATION) if existing else None
    if opts.feed is None and not current_feed:
        client.put_trigger(name, opts.body(), overwrite=True)
    elif not current_feed:
        _create_feed_trigger(session, name, opts, overwrite=True, existed=existing is not None)
    else:
        feed = str(current_feed)
        if opts.feed is not None and qualified_name(opts.feed, client.namespace) != feed:
            raise click.UsageError(f"trigger {name} already has the feed {feed}")
        _invoke_feed(session, feed, name, "UPDATE", opts.params())
    _ok(session, f"updated trigger {name}")


def _trigger_or_none(client: WhiskClient, name: str) -> JSON | None:
    try:
        return client.get_trigger(name)
    except WhiskError as exc:
        if exc.status == 404:
            return None
        raise


def _create_feed_trigger(
    session: Session, name: str, opts: TriggerOptions, *, overwrite: bool, existed: bool
) -> None:
    """wsk's feed trigger: the trigger with a `feed` annotation, then the feed's CREATE.

    When the feed fails, a trigger this command created is deleted again.
    """
    client = session.client()
    feed = qualified_name(opts.feed or "", client.namespace)
    annotations = [a for a in opts.annotations() if a["key"] != FEED_ANNOTATION]
    annotations.append({"key": FEED_ANNOTATION, "value": feed})
    client.put_trigger(name, {"annotations": annotations}, overwrite=overwrite)
    try:
        _invoke_feed(session, feed, name, "CREATE", opts.params())
    except (WhiskError, CliError) as exc:
        if not existed:
            try:
                client.delete_trigger(name)
            except WhiskError as cleanup:
                _stderr_line(f"warning: trigger {name} could not be deleted again: {cleanup}")
        raise CliError(f"feed {feed} failed to create trigger {name}: {_message(exc)}") from exc


def _invoke_feed(session: Session, feed: str, trigger: str, event: str, params: JSON) -> None:
    """Invoke a feed action blocking with OpenWhisk's feed parameters; CliError on failure."""
    client = session.client()
    _, auth = session.settings().require()
    feed_params = {
        **params,
        "lifecycleEvent": event,
        "triggerName": _trigger_path(client, trigger),
        "authKey": auth,
    }
    invocation = client.invoke_action(feed, feed_params, blocking=True)
    if invocation.failed:
        raise CliError(_feed_error(invocation))


def _trigger_path(client: WhiskClient, name: str) -> str:
    """`/namespace/name` with the real namespace: a feed outlives the `_` of this client."""
    namespace, parts = split_name(name, client.namespace)
    if namespace == "_":
        namespaces = client.list_namespaces()
        namespace = namespaces[0] if namespaces else namespace
    return "/" + "/".join([namespace, *parts])


def _feed_error(invocation: Invocation) -> str:
    body = invocation.body
    response = body.get("response") if isinstance(body, dict) else None
    result = response.get("result") if isinstance(response, dict) else body
    if isinstance(result, dict) and result.get("error"):
        return str(result["error"])
    return f"{_failure_status(invocation)} (activation {invocation.activation_id})"


def _message(exc: Exception) -> str:
    return exc.format_message() if isinstance(exc, click.ClickException) else str(exc)


@trigger_group.command("get")
@click.argument("name")
@global_options()
@pass_session
def trigger_get(session: Session, name: str) -> None:
    """Show trigger NAME."""
    trigger = session.client().get_trigger(name)
    _ok(session, f"got trigger {name}")
    _echo_json(trigger)


@trigger_group.command("list")
@list_options("triggers")
@global_options()
@pass_session
def trigger_list(session: Session, limit: int | None, skip: int | None) -> None:
    """List triggers."""
    triggers = session.client().list_triggers(limit=limit, skip=skip)
    if session.json_output:
        _echo_json(triggers)
        return
    click.echo("triggers")
    rows = [[_entity_name(t), "shared" if t.get("publish") else "private"] for t in triggers]
    if rows:
        click.echo(_table(rows))


@trigger_group.command("delete")
@click.argument("name")
@global_options()
@pass_session
def trigger_delete(session: Session, name: str) -> None:
    """Delete trigger NAME (a feed trigger's feed is told first, with lifecycleEvent DELETE)."""
    client = session.client()
    feed = _annotations(client.get_trigger(name)).get(FEED_ANNOTATION)
    problem = None
    if feed:
        try:
            _invoke_feed(session, str(feed), name, "DELETE", {})
        except (WhiskError, CliError) as exc:
            problem = _message(exc)
    client.delete_trigger(name)
    _ok(session, f"deleted trigger {name}")
    if problem:
        _stderr_line(f"warning: feed {feed} failed to delete its part of trigger {name}: {problem}")


@trigger_group.command("fire")
@click.argument("name")
@param_options
@global_options()
@pass_session
def trigger_fire(
    session: Session,
    name: str,
    param: tuple[tuple[str, str], ...],
    param_file: Path | None,
) -> None:
    """Fire trigger NAME with the given parameters as payload."""
    client = session.client()
    activation_id = client.fire_trigger(name, _params(param_file, param))
    fq_name = qualified_name(name, client.namespace)
    if session.json_output:
        _echo_json({"activationId": activation_id} if activation_id else {})
    elif activation_id:
        click.echo(f"ok: triggered {fq_name} with id {activation_id}")
    else:
        click.echo(f"ok: triggered {fq_name}; it has no active rule, so nothing was invoked")


# ------------------------------------------------------------------------------------- rule


@cli.group("rule")
def rule_group() -> None:
    """Connect triggers to actions: create, enable, disable, inspect and delete rules."""


@rule_group.command("create")
@click.argument("name")
@click.argument("trigger")
@click.argument("action")
@global_options()
@pass_session
def rule_create(session: Session, name: str, trigger: str, action: str) -> None:
    """Create rule NAME: firing TRIGGER invokes ACTION. New rules are active."""
    session.client().put_rule(name, trigger, action)
    _ok(session, f"created rule {name}")


@rule_group.command("update")
@click.argument("name")
@click.argument("trigger")
@click.argument("action")
@global_options()
@pass_session
def rule_update(session: Session, name: str, trigger: str, action: str) -> None:
    """Update (or create) rule NAME to connect TRIGGER to ACTION."""
    session.client().put_rule(name, trigger, action, overwrite=True)
    _ok(session, f"updated rule {name}")


@rule_group.command("get")
@click.argument("name")
@global_options()
@pass_session
def rule_get(session: Session, name: str) -> None:
    """Show rule NAME."""
    rule = session.client().get_rule(name)
    _ok(session, f"got rule {name}")
    _echo_json(rule)


@rule_group.command("status")
@click.argument("name")
@global_options()
@pass_session
def rule_status(session: Session, name: str) -> None:
    """Show whether rule NAME is active."""
    rule = session.client().get_rule(name)
    if session.json_output:
        _echo_json({"status": rule.get("status")})
    else:
        click.echo(f"ok: rule {name} is {rule.get('status', 'unknown')}")


@rule_group.command("list")
@list_options("rules")
@global_options()
@pass_session
def rule_list(session: Session, limit: int | None, skip: int | None) -> None:
    """List rules."""
    rules = session.client().list_rules(limit=limit, skip=skip)
    if session.json_output:
        _echo_json(rules)
        return
    click.echo("rules")
    rows = [
        [
            _entity_name(r),
            "shared" if r.get("publish") else "private",
            str(r.get("status", "-")),
        ]
        for r in rules
    ]
    if rows:
        click.echo(_table(rows))


@rule_group.command("enable")
@click.argument("name")
@global_options()
@pass_session
def rule_enable(session: Session, name: str) -> None:
    """Activate rule NAME: firing its trigger invokes its action."""
    session.client().set_rule_status(name, "active")
    _ok(session, f"enabled rule {name}")


@rule_group.command("disable")
@click.argument("name")
@global_options()
@pass_session
def rule_disable(session: Session, name: str) -> None:
    """Deactivate rule NAME: firing its trigger no longer invokes its action."""
    session.client().set_rule_status(name, "inactive")
    _ok(session, f"disabled rule {name}")


@rule_group.command("delete")
@click.argument("name")
@click.option("--disable", is_flag=True, help="Disable the rule before deleting it.")
@global_options()
@pass_session
def rule_delete(session: Session, name: str, disable: bool) -> None:
    """Delete rule NAME."""
    client = session.client()
    if disable:
        client.set_rule_status(name, "inactive")
    client.delete_rule(name)
    _ok(session, f"deleted rule {name}")


# ------------------------------------------------------------------------------- activation


@cli.group("activation")
def activation_group() -> None:
    """Inspect activations: list, get, result, logs, poll."""


@activation_group.command("list")
@click.argument("name", required=False)
@click.option(
    "-l",
    "--limit",
    type=click.IntRange(0, MAX_LIST_LIMIT),
    metavar="N",
    help="At most N activations (default 30).",
)
@click.option(
    "-s", "--skip", type=click.IntRange(min=0), metavar="N", help="Skip the first N activations."
)
@click.option("--since", type=int, metavar="EPOCH_MS", help="Started at or after this time.")
@click.option("--upto", type=int, metavar="EPOCH_MS", help="Started at or before this time.")
@click.option("-f", "--full", is_flag=True, help="Fetch full records (printed as JSON).")
@global_options()
@pass_session
def activation_list(
    session: Session,
    name: str | None,
    limit: int | None,
    skip: int | None,
    since: int | None,
    upto: int | None,
    full: bool,
) -> None:
    """List activations, newest first, optionally only those of action NAME."""
    records = session.client().list_activations(
        name=name, limit=limit, skip=skip, since=since, upto=upto, docs=full
    )
    if session.json_output or full:
        _echo_json(records)
        return
    headers = ["Datetime", "Activation ID", "Kind", "Start", "Duration", "Status", "Entity"]
    click.echo(_table([headers, *(activation_row(r) for r in records)]))


def activation_row(record: JSON) -> list[str]:
    """One line of `activation list`, in wsk's columns."""
    annotations = _annotations(record)
    kind = annotations.get("kind")
    # Trigger activations have no kind and no container, so cold/warm means nothing for them.
    start = "-" if kind is None else ("cold" if "initTime" in annotations else "warm")
    duration = record.get("duration")
    entity = f"{record.get('namespace', '?')}/{record.get('name', '?')}"
    return [
        _datetime(record.get("start")),
        str(record.get("activationId", "?")),
        str(kind or "-"),
        start,
        f"{duration}ms" if isinstance(duration, int) else "-",
        _status_name(record),
        f"{entity}:{record['version']}" if record.get("version") else entity,
    ]


def _status_name(record: JSON) -> str:
    response = record.get("response")
    code = record.get("statusCode")
    if code is None and isinstance(response, dict):
        code = response.get("statusCode")
    if isinstance(code, int):
        return STATUS_NAMES.get(code, f"status {code}")
    if isinstance(response, dict) and response.get("status"):
        return str(response["status"])
    return "-"


def _datetime(epoch_ms: Any) -> str:
    if not isinstance(epoch_ms, int | float) or epoch_ms <= 0:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def activation_id_options(f: F) -> F:
    f = click.option("-l", "--last", is_flag=True, help="Use the most recent activation.")(f)
    return click.argument("activation_id", metavar="ID", required=False)(f)


def _pick_activation(session: Session, activation_id: str | None, last: bool) -> str:
    if activation_id and last:
        raise click.UsageError("give an activation ID or --last, not both")
    if activation_id:
        return activation_id
    if not last:
        raise click.UsageError("give an activation ID or --last")
    recent = session.client().list_activations(limit=1)
    if not recent or not recent[0].get("activationId"):
        raise CliError("there are no activations yet")
    return str(recent[0]["activationId"])


@activation_group.command("get")
@activation_id_options
@global_options()
@pass_session
def activation_get(session: Session, activation_id: str | None, last: bool) -> None:
    """Show the full record of activation ID (or the most recent with --last)."""
    activation_id = _pick_activation(session, activation_id, last)
    record = session.client().get_activation(activation_id)
    _ok(session, f"got activation {activation_id}")
    _echo_json(record)


@activation_group.command("result")
@activation_id_options
@global_options()
@pass_session
def activation_result(session: Session, activation_id: str | None, last: bool) -> None:
    """Show the result of activation ID (or the most recent with --last)."""
    activation_id = _pick_activation(session, activation_id, last)
    response = session.client().activation_result(activation_id)
    _echo_json(response if session.json_output else response.get("result", {}))


@activation_group.command("logs")
@activation_id_options
@click.option("-r", "--strip", is_flag=True, help="Drop each line's timestamp and stream.")
@global_options()
@pass_session
def activation_logs(session: Session, activation_id: str | None, last: bool, strip: bool) -> None:
    """Show the logs of activation ID (or the most recent with --last)."""
    activation_id = _pick_activation(session, activation_id, last)
    lines = session.client().activation_logs(activation_id)
    lines = [strip_log_line(line) for line in lines] if strip else lines
    if session.json_output:
        _echo_json(lines)
    else:
        for line in lines:
            click.echo(line)


def strip_log_line(line: str) -> str:
    return LOG_PREFIX.sub("", line, count=1)


@activation_group.command("poll")
@click.argument("name", required=False)
@click.option(
    "--exit",
    "exit_after",
    type=click.IntRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Stop after SECONDS (default 0: until Ctrl-C).",
)
@global_options()
@pass_session
def activation_poll(session: Session, name: str | None, exit_after: int) -> None:
    """Print the logs of new activations (of action NAME) as they arrive."""
    client = session.client()
    deadline = session.clock() + exit_after if exit_after else None
    poller = _Poller(client, name, start_ms=_ms(session.clock()))
    _stderr_line("Polling for activation logs; Ctrl-C to stop.")
    try:
        while True:
            for record in poller.poll(_ms(session.clock())):
                _print_activation_logs(record)
            remaining = None if deadline is None else deadline - session.clock()
            if remaining is not None and remaining <= 0:
                return
            session.sleep(POLL_INTERVAL_S if remaining is None else min(POLL_INTERVAL_S, remaining))
    except KeyboardInterrupt:
        _stderr_line("stopped")


@dataclass
class _Poller:
    """Remembers which activations were printed; forgets them once out of the look-back window,
    so memory stays bounded however long the poll runs."""

    client: WhiskClient
    name: str | None
    start_ms: int
    seen: dict[str, int] = field(default_factory=dict)

    def poll(self, now_ms: int) -> list[JSON]:
        since = max(self.start_ms, now_ms - POLL_LOOKBACK_MS)
        records = self.client.list_activations(
            name=self.name, since=since, limit=MAX_LIST_LIMIT, docs=True
        )
        fresh = [r for r in records if r.get("activationId") and r["activationId"] not in self.seen]
        fresh.sort(key=lambda r: r.get("start") or 0)  # the API lists newest first
        for record in fresh:
            self.seen[str(record["activationId"])] = int(record.get("start") or now_ms)
        self.seen = {k: start for k, start in self.seen.items() if start >= since}
        return fresh


def _print_activation_logs(record: JSON) -> None:
    click.echo(f"Activation: '{record.get('name', '?')}' ({record.get('activationId')})")
    for line in record.get("logs") or []:
        click.echo(f"    {line}")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# ---------------------------------------------------------------------------------- helpers


def _ok(session: Session, message: str) -> None:
    # With --json, stdout carries only JSON, so scripts can parse it.
    if not session.json_output:
        click.echo(f"ok: {message}")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=4, ensure_ascii=False))


def _stderr_line(line: str) -> None:
    click.echo(line, err=True)


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns as wide as their widest cell; first row may be a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _key_value_list(value: Any) -> list[Mapping[str, Any]]:
    return [kv for kv in value if isinstance(kv, Mapping)] if isinstance(value, list) else []


def _annotations(entity: JSON) -> dict[str, Any]:
    pairs = _key_value_list(entity.get("annotations"))
    return {str(kv.get("key")): kv.get("value") for kv in pairs}


def _entity_name(entity: JSON) -> str:
    return f"/{entity.get('namespace', '_')}/{entity.get('name', '?')}"


def _action_kind(action: JSON) -> str:
    exec_ = action.get("exec")
    kind = exec_.get("kind") if isinstance(exec_, dict) else None
    return str(kind or _annotations(action).get("exec") or "-")


# `squall package` lives in its own module, which builds on the helpers above; importing it
# here (last, once they exist) registers it wherever `cli` is used.
from squall.cli import packages as _package_commands  # noqa: E402, F401
