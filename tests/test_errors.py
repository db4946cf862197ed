"""The error tree: every error a client can get is declared, with its status and code, in gateway/errors.py."""

from __future__ import annotations

import importlib
import pkgutil

import gateway
from gateway import errors
from gateway.errors import GatewayError


def every_gateway_error() -> list[type[GatewayError]]:
    """Every subclass of `GatewayError` once the whole package is imported."""
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if module.name != "gateway.__main__":
            importlib.import_module(module.name)
    found, todo = [], [GatewayError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_lives_in_errors_py() -> None:
    elsewhere = [
        f"{cls.__module__}.{cls.__name__}" for cls in every_gateway_error() if cls.__module__ != errors.__name__
    ]
    assert elsewhere == []


def test_the_docstring_tree_names_each_error_with_its_status_and_code() -> None:
    tree = {line.split()[0]: line.split()[1:3] for line in (errors.__doc__ or "").splitlines()[2:] if line.strip()}
    assert {cls.__name__: [str(cls.status), cls.code] for cls in every_gateway_error()} == tree
