"""`notebook-gateway dev | serve | check-config | config-reference | policy | audit | login | token | logout |
notebooks`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path

from aiohttp import web

from .. import config, logs, version
from ..app import create_app
from ..audit.log import send_to_stdout
from ..middlewares import AccessLogger
from . import audit as audit_cli
from . import login as login_cli
from . import notebooks as notebooks_cli
from . import policy as policy_cli
from . import workers

log = logging.getLogger(__name__)
DEV_CLI_CLIENT_ID = "notebook-gateway-cli"  # the public client `dev` registers with its development provider


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notebook-gateway", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file of settings (environment variables win)")
    parser.add_argument("--version", action=PrintVersion, help="print the version (and commit, when known) and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="run on this machine: local Jupyter servers, 127.0.0.1 only")
    dev.add_argument("--port", type=int, help="port to listen on (default 8080, or GATEWAY_PORT)")
    commands.add_parser("serve", help="run in production with the configured backend")
    commands.add_parser("check-config", help="report every invalid setting and exit non-zero if any")
    commands.add_parser("config-reference", help="print every setting as a Markdown table")
    policy_cli.add_arguments(commands.add_parser("policy", help="check a decision, or lint a policy file"))
    audit_cli.add_arguments(commands.add_parser("audit", help="verify the audit log's hash chain, or search it"))
    login_cli.add_arguments(commands)
    notebooks_cli.add_arguments(commands.add_parser("notebooks", help="list, create, stop, start or delete servers"))
    args = parser.parse_args(argv)
    if args.command == "config-reference":
        print(config_reference())
        return 0
    if args.command == "policy":
        return policy_cli.run(args)
    if args.command == "audit":
        return audit_cli.run(args)
    if args.command in ("login", "token", "logout"):
        return login_cli.run(args)
    if args.command == "notebooks":
        return notebooks_cli.run(args)

    try:
        settings = config.load(args.config)
        if args.command == "dev":
            settings = dev_settings(settings, port=args.port)
    except config.ConfigError as exc:
        return report(exc.problems)
    if args.command in ("serve", "check-config") and (problems := settings.problems_for_serve()):
        return report(problems, "for serve ")
    if args.command == "check-config":
        return check(settings)
    return run(settings, dev=args.command == "dev")


class PrintVersion(argparse.Action):
    """`--version`, worked out only when asked (finding the commit may ask git)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version.describe())
        parser.exit()


def check(settings: config.Settings) -> int:
    """`check-config`: the settings are valid on their own (above); here the app is built from them as
    `serve` builds it, without opening anything, so what its parts refuse on construction (a malformed
    bootstrap admin, an unreadable spawner config) is reported too, not found at the first start."""
    try:
        create_app(settings)
    except config.ConfigError as exc:
        return report(exc.problems, "for serve ")
    except ValueError as exc:
        return report([str(exc)], "for serve ")
    print("configuration is valid")
    return 0


def report(problems: list[str], context: str = "") -> int:
    """Print every configuration problem, one per line, and return the exit status for them."""
    print(f"notebook-gateway: invalid configuration {context}({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def config_reference() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, default, description in config.describe():
        lines.append(f"| `{name}` | {f'`{default}`' if default else ''} | {description} |")
    return "\n".join(lines)


def dev_settings(settings: config.Settings, *, port: int | None) -> config.Settings:
    """Dev defaults: local Jupyter servers unless a backend was chosen, and loopback only."""
    update: dict[str, object] = {}
    if settings.oidc_issuer is None:
        # Anyone may sign in to the development provider, so such a gateway listens on loopback only.
        update.update(dev_provider=True, host="127.0.0.1")
    if "backend" not in settings.model_fields_set:
        update["backend"] = "local"
    if "log_format" not in settings.model_fields_set:
        update["log_format"] = "text"
    # Policies that survive a restart; a profile for everyone who signs in; and, while nobody is
    # cluster-admin yet, the first person to sign in becomes one (the page tells them so).
    if "policy_file" not in settings.model_fields_set:
        update["policy_file"] = Path(".dev/policy.csv")
    if settings.oidc_issuer is None and settings.cli_client_id is None:
        update["cli_client_id"] = DEV_CLI_CLIENT_ID  # `notebook-gateway login` works against `dev` as it is
    if "auto_profile" not in settings.model_fields_set:
        update["auto_profile"] = True
    if "first_user_admin" not in settings.model_fields_set:
        update["first_user_admin"] = True
    if port is not None:
        update["port"] = port
    if settings.notebook_origins == "isolated" and settings.notebook_domain is None:
        # Every notebook on its own origin from the first command: browsers and curl resolve *.localhost
        # to loopback by themselves, so no DNS is needed. The gateway keeps 127.0.0.1 (unless its public
        # URL is on localhost already), so that no notebook host lies inside the gateway's.
        public_host = (settings.public_url.host or "") if settings.public_url else ""
        localhost = public_host == "localhost" or public_host.endswith(".localhost")
        update["notebook_domain"] = "nb.localhost" if localhost else "localhost"
    return settings.model_copy(update=update)


def run(settings: config.Settings, *, dev: bool, worker: int | None = None) -> int:
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1 and worker is None:  # this process only supervises (cli/workers.py)
        if problems := workers.problems(settings, dev=dev):
            return report(problems)
        return workers.supervise(settings, run)
    if settings.audit_stdout and not dev:
        send_to_stdout()  # bare JSON lines on stdout for shippers (dev shows them among the logs)
    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return report(exc.problems)
    except ValueError as exc:  # e.g. a malformed spawner config file
        print(f"notebook-gateway: {exc}", file=sys.stderr)
        return 2

    def announce(_: str) -> None:
        if not dev:  # serve: stdout carries JSON log lines only
            log.info("listening on %s:%s, public URL %s", settings.host, settings.port, settings.base_url)
            return
        print(f"Notebook Gateway (dev mode, backend: {settings.backend}) is running.", flush=True)
        print(f"Open {settings.base_url}/", flush=True)
        if settings.notebook_origins == "isolated":
            print(
                f"Each notebook server opens on its own origin, http://<name>--<namespace>.{settings.notebook_domain}"
                f":{settings.port}/ (Chromium and curl resolve *.localhost to this machine by themselves).",
                flush=True,
            )
        else:
            print("WARNING: single-origin mode: a notebook's code runs as whoever opens it.", flush=True)
        if settings.dev_provider:
            print(
                "Sign in with any username and password: the built-in development provider accepts them all "
                "(listening on 127.0.0.1 only).",
                flush=True,
            )

    app.on_startup.append(freeze_startup_objects)  # after every cleanup context has opened its resources
    try:
        web.run_app(
            app,
            loop=new_event_loop(settings.event_loop),
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_grace_s,
            access_log_class=AccessLogger,
            access_log=logging.getLogger("gateway.access"),
            print=announce,
            reuse_port=settings.workers > 1,  # the workers share the port; the kernel spreads connections
        )
    except config.ConfigError as exc:  # found while opening resources, e.g. a malformed routes file
        return report(exc.problems)
    return 0


async def freeze_startup_objects(_: web.Application) -> None:
    """What start-up made (settings, policies, routes, templates, models) lives as long as the process: moved out
    of the collector's way (`gc.freeze`), so that its full collections, the pauses a request's p99 meets, walk
    only what requests made. Not in `create_app`: a test process makes hundreds of apps, and frozen cycles stay."""
    gc.collect()
    gc.freeze()


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (`pip install notebook-gateway[fast]`) and not turned off: the same asyncio API
    on libuv, with cheaper socket reads and writes, which is most of what a proxy does."""
    if kind == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


if __name__ == "__main__":
    sys.exit(main())
