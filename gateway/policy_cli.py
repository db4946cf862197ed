"""`notebook-gateway policy check ...` (may this user do that, and which rules say so) and
`notebook-gateway policy lint FILE` (findings about a policy file). Exit 0: allowed / clean."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config
from .authz import PolicyAuthorizer, build_snapshot
from .policies import ACTIONS, EMPTY, PolicyError, normalise_subject, parse_policy
from .policy_lint import lint
from .policy_manager import PolicyManager
from .policy_store import MemoryPolicyStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="policy_command", required=True)
    check = commands.add_parser("check", help="may a user do an action in a namespace, and which rules decide it")
    check.add_argument("--user", required=True, help="the username, as sign-in reports it (e.g. an email)")
    check.add_argument("--group", action="append", default=[], help="a group of the user (repeat for several)")
    check.add_argument("--namespace", required=True, help="a namespace, or * for the cluster-wide actions")
    check.add_argument("--action", required=True, choices=ACTIONS)
    check.add_argument("--notebook", help="a notebook server's name, for an action on one server")
    check.add_argument("--file", type=Path, help="policy file to read (default: GATEWAY_POLICY_FILE)")
    check.add_argument("--json", action="store_true", help="answer in the API's JSON shape")
    lint_parser = commands.add_parser("lint", help="report bad lines, cluster roles per namespace, dead rules")
    lint_parser.add_argument("file", type=Path)


def run(args: argparse.Namespace) -> int:
    if args.policy_command == "lint":
        return run_lint(args.file)
    return run_check(args)


def run_lint(path: Path) -> int:
    try:
        content = path.read_bytes()
    except OSError as exc:
        print(f"{path}: cannot read it: {exc.strerror}", file=sys.stderr)
        return 2
    findings = lint(content)
    for finding in findings:
        print(finding.format(str(path)))
    if findings:
        print(f"{path}: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print(f"{path}: no findings")
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    path: Path | None = args.file or settings.policy_file
    try:
        doc = parse_policy(path.read_bytes()) if path is not None else EMPTY
        # The manager validates the bootstrap admins exactly as the gateway would.
        admins = PolicyManager(MemoryPolicyStore(), bootstrap_admins=settings.bootstrap_admins).bootstrap_admins
    except (OSError, PolicyError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    authorizer = PolicyAuthorizer(
        build_snapshot(doc, admins, kind="file", location=str(path)) if path else build_snapshot(doc, admins)
    )
    user = normalise_subject(f"user:{args.user}").removeprefix("user:")
    explanation = authorizer.explain(user, tuple(sorted(set(args.group))), args.namespace, args.action, args.notebook)
    if args.json:
        print(json.dumps(explanation.to_json(), indent=2))
    else:
        print(f"{'allowed' if explanation.allowed else 'denied'}: {explanation.reason}")
        for rule, source in explanation.rules:
            where = f"{source.location}:{source.line}" if source.line is not None else source.location
            print(f"  {rule.to_line()}    ({where})")
    return 0 if explanation.allowed else 1
