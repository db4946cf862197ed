"""`notebook-gateway notebooks list|create|stop|start|delete`: the everyday verbs, over the JSON API with the
token `login` stored (refreshed as `token` does)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import GatewayError
from . import login as login_cli
from .token_store import TokenStoreError, normalise_gateway

NAMESPACE_ENV = "NOTEBOOK_GATEWAY_NAMESPACE"


class ApiError(Exception):
    """The gateway refused a call: its status and message."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    login_cli.add_gateway_argument(parser)
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get(NAMESPACE_ENV),
        required=NAMESPACE_ENV not in os.environ,
        help=f"the namespace (Kubeflow profile) of the servers (default: ${NAMESPACE_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer as it is")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="the notebook servers of the namespace")
    create = verbs.add_parser("create", help="a new notebook server (the form's defaults for what is not given)")
    create.add_argument("name")
    create.add_argument("--image", help="container image")
    create.add_argument("--cpu", help="CPU request, e.g. 0.5")
    create.add_argument("--memory", help="memory request, e.g. 1Gi")
    for verb in ("stop", "start"):
        verbs.add_parser(verb, help=f"{verb} a notebook server").add_argument("name")
    delete = verbs.add_parser("delete", help="delete a notebook server")
    delete.add_argument("name")
    delete.add_argument("--volumes", action="store_true", help="and the volumes made with it")


def run(args: argparse.Namespace) -> int:
    try:
        answer = asyncio.run(call(args))
    except (ApiError, login_cli.LoginError, TokenStoreError, GatewayError) as exc:
        print(f"notebook-gateway: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    elif args.verb == "list":
        for notebook in answer.get("notebooks", []):
            state = "stopped" if notebook.get("stopped") else notebook.get("status", {}).get("phase", "")
            print(f"{notebook['name']}\t{state}\t{notebook.get('image', '')}")
    else:
        print(answer.get("message", "done"))
    return 0


def request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, JSON body) of the API call a verb makes."""
    base = f"/api/namespaces/{quote(args.namespace, safe='')}/notebooks"
    if args.verb == "list":
        return "GET", base, None
    if args.verb == "create":
        body = {"name": args.name} | {k: v for k in ("image", "cpu", "memory") if (v := getattr(args, k)) is not None}
        return "POST", base, body
    path = f"{base}/{quote(args.name, safe='')}"
    if args.verb in ("stop", "start"):
        return "PATCH", path, {"stopped": args.verb == "stop"}
    return "DELETE", path + ("?volumes=true" if args.volumes else ""), None


async def call(args: argparse.Namespace) -> dict[str, Any]:
    method, path, body = request_for(args)
    token = await login_cli.current_token(args.gateway)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with login_cli.client_session() as http:
        try:
            async with http.request(
                method, f"{normalise_gateway(args.gateway)}{path}", json=body, headers=headers
            ) as resp:
                status = resp.status
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:
                    answer = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(f"The gateway did not answer: {type(exc).__name__}") from None
    if not isinstance(answer, dict):
        raise ApiError(f"The gateway answered {status} without JSON.")
    if status != 200:
        raise ApiError(f"{status} {answer.get('message') or answer.get('error') or ''}".strip())
    return answer
