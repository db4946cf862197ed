"""`notebook-gateway policy check ...` (may this user do that, and which rules say so) and
`notebook-gateway policy lint FILE` (findings about a policy file). Exit 0: allowed / clean.

`check` decides from what the running gateway would: the policy store its settings name (the file,
or the ConfigMap with GATEWAY_POLICY_STORE=configmap), the bootstrap admins, and Kubeflow's Profiles
and RoleBindings with GATEWAY_KUBEFLOW_POLICIES. Exit 2 when any of them cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .. import config
from ..app import build_kube_client, open_kube_client
from ..authz.authorizer import PolicyAuthorizer, Source, build_snapshot
from ..authz.configmap import ConfigMapPolicyStore, PolicyStoreUnavailable
from ..authz.kubeflow import list_rules
from ..authz.lint import lint
from ..authz.manager import PolicyManager
from ..authz.rules import ACTIONS, EMPTY, PolicyDoc, PolicyError, Rule, normalise_subject, parse_policy
from ..authz.stores import MemoryPolicyStore
from ..errors import KubernetesError
from ..kube.client import KubeClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="policy_command", required=True)
    check = commands.add_parser("check", help="may a user do an action in a namespace, and which rules decide it")
    check.add_argument("--user", required=True, help="the username, as sign-in reports it (e.g. an email)")
    check.add_argument("--group", action="append", default=[], help="a group of the user (repeat for several)")
    check.add_argument("--namespace", required=True, help="a namespace, or * for the cluster-wide actions")
    check.add_argument("--action", required=True, choices=ACTIONS)
    check.add_argument("--notebook", help="a notebook server's name, for an action on one server")
    check.add_argument(
        "--file",
        type=Path,
        help="policy file to read instead of the configured store (default: GATEWAY_POLICY_FILE, or the "
        "ConfigMap with GATEWAY_POLICY_STORE=configmap)",
    )
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


@dataclass(frozen=True, slots=True)
class _Policy:
    """What the gateway's authorizer is built from."""

    doc: PolicyDoc
    kind: Literal["file", "configmap", "memory"]
    location: str
    external: dict[Rule, Source]


def run_check(args: argparse.Namespace) -> int:
    try:
        settings = config.load(args.config)
        # The manager validates the bootstrap admins exactly as the gateway would.
        admins = PolicyManager(MemoryPolicyStore(), bootstrap_admins=settings.bootstrap_admins).bootstrap_admins
    except config.ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except PolicyError as exc:
        print(f"GATEWAY_BOOTSTRAP_ADMINS: {exc}", file=sys.stderr)
        return 2
    try:
        policy = asyncio.run(read_policy(settings, args.file))
    except config.ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    except _Unreadable as exc:
        print(str(exc), file=sys.stderr)
        return 2
    snapshot = build_snapshot(policy.doc, admins, kind=policy.kind, location=policy.location, external=policy.external)
    authorizer = PolicyAuthorizer(snapshot)
    user = normalise_subject(f"user:{args.user}").removeprefix("user:")
    explanation = authorizer.explain(user, tuple(sorted(set(args.group))), args.namespace, args.action, args.notebook)
    if args.json:
        print(json.dumps(explanation.to_json(), indent=2))
    else:
        print(f"{'allowed' if explanation.allowed else 'denied'}: {explanation.reason}")
        for rule, source in explanation.rules:
            print(f"  {rule.to_line()}    ({describe_source(source)})")
    return 0 if explanation.allowed else 1


KUBEFLOW_KINDS = {"kubeflow-profile": "Kubeflow Profile", "kubeflow-rolebinding": "Kubeflow RoleBinding"}


def describe_source(source: Source) -> str:
    """`policy.csv:3`, `kubeflow/notebook-gateway-policies:3`, `Kubeflow RoleBinding alice/x`, ..."""
    if source.line is not None:
        return f"{source.location}:{source.line}"
    if source.kind in KUBEFLOW_KINDS:
        return f"{KUBEFLOW_KINDS[source.kind]} {source.location}"
    return source.location


class _Unreadable(Exception):
    """A source of rules could not be read: the answer would be a guess."""


async def read_policy(settings: config.Settings, file: Path | None) -> _Policy:
    """The policy document from the store the settings name (or `file`), and Kubeflow's rules."""
    from_configmap = file is None and settings.policy_store == "configmap"
    kube = build_kube_client(settings) if from_configmap or settings.kubeflow_policies else None
    if kube is not None:
        await open_kube_client(kube)
    try:
        return await _read_policy(settings, file, kube)
    finally:
        if kube is not None:
            await kube.close()


async def _read_policy(settings: config.Settings, file: Path | None, kube: KubeClient | None) -> _Policy:
    doc: PolicyDoc
    kind: Literal["file", "configmap", "memory"]
    if kube is None or file is not None or settings.policy_store == "file":
        path = file or settings.policy_file
        if path is None:
            doc, kind, location = EMPTY, "memory", "memory"
        else:
            try:
                doc = parse_policy(await asyncio.to_thread(path.read_bytes))
            except (OSError, PolicyError) as exc:
                raise _Unreadable(f"{path}: {exc}") from None
            kind, location = "file", str(path)
    else:
        store = ConfigMapPolicyStore.from_settings(settings, kube)
        try:
            found = await store.read()
        except (PolicyStoreUnavailable, PolicyError) as exc:
            raise _Unreadable(f"ConfigMap {store.location}: {exc}") from None
        doc, kind, location = found or EMPTY, "configmap", store.location  # none yet: the gateway starts empty
    external: dict[Rule, Source] = {}
    if settings.kubeflow_policies and kube is not None:
        try:
            external = await list_rules(kube)
        except KubernetesError as exc:
            message = (
                f"GATEWAY_KUBEFLOW_POLICIES: listing Kubeflow's Profiles and RoleBindings failed: {exc.description}"
            )
            raise _Unreadable(message) from None
    return _Policy(doc, kind, location, external)
