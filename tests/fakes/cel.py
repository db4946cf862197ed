"""The part of CEL (Common Expression Language) that the ValidatingAdmissionPolicies in `deploy/` use,
evaluated as the API server would, so the fake API server can enforce them.

Covered: `&&`, `||`, `!`, `==`, `!=`, `in` (map keys, list items), field selection and indexing (an
absent key is an error, as in CEL), `has(a.b)`, `null`, string `startsWith` / `endsWith`, the list
macros `all` and `exists`, list literals. Anything else raises `CelError`, which an admission policy
with `failurePolicy: Fail` turns into a refusal: a policy using more than this fails closed in the
tests rather than passing unseen. (No CEL library is installed; cel-python would replace this.)
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any


class CelError(Exception):
    """The expression is outside the supported subset, or its evaluation failed (e.g. no such key)."""


# CEL's operators that are not Python's; `!` only where it is not the start of `!=`.
_TRANSLATIONS = [(re.compile(r"&&"), " and "), (re.compile(r"\|\|"), " or "), (re.compile(r"!(?!=)"), " not ")]
_TRANSLATIONS += [(re.compile(r"\bnull\b"), "None"), (re.compile(r"\btrue\b"), "True")]
_TRANSLATIONS += [(re.compile(r"\bfalse\b"), "False")]
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def evaluate(expression: str, variables: Mapping[str, Any]) -> Any:
    """The value of `expression` with `variables` bound (JSON values: dicts, lists, strings, ...)."""
    # Translate outside string literals only, so a label value holding `!` or `&&` stays as it is.
    pieces, last = [], 0
    for match in _STRING.finditer(expression):
        pieces += [_translate(expression[last : match.start()]), match.group(0)]
        last = match.end()
    pieces.append(_translate(expression[last:]))
    try:
        tree = ast.parse(" ".join(" ".join(pieces).split()), mode="eval")
    except SyntaxError as exc:
        raise CelError(f"cannot parse {expression!r}: {exc}") from None
    return _eval(tree.body, dict(variables))


def _translate(text: str) -> str:
    for pattern, replacement in _TRANSLATIONS:
        text = pattern.sub(replacement, text)
    return text


def _eval(node: ast.expr, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise CelError(f"undeclared reference to {node.id!r}")
        return env[node.id]
    if isinstance(node, ast.List):
        return [_eval(item, env) for item in node.elts]
    if isinstance(node, ast.Attribute):
        return _select(_eval(node.value, env), node.attr)
    if isinstance(node, ast.Subscript):
        return _select(_eval(node.value, env), _eval(node.slice, env))
    if isinstance(node, ast.BoolOp):
        result = isinstance(node.op, ast.And)
        for value in node.values:
            item = _boolean(_eval(value, env))
            if item != result:  # short-circuit: false for &&, true for ||
                return item
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _boolean(_eval(node.operand, env))
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = _eval(node.left, env), _eval(node.comparators[0], env)
        operator = node.ops[0]
        if isinstance(operator, ast.Eq | ast.NotEq):
            return (left == right) == isinstance(operator, ast.Eq)
        if isinstance(operator, ast.In | ast.NotIn) and isinstance(right, dict | list):
            return (left in right) == isinstance(operator, ast.In)
    if isinstance(node, ast.Call):
        return _call(node, env)
    raise CelError(f"unsupported expression: {ast.unparse(node)}")


def _call(node: ast.Call, env: dict[str, Any]) -> Any:
    if isinstance(node.func, ast.Name) and node.func.id == "has" and len(node.args) == 1:
        [field] = node.args
        if not isinstance(field, ast.Attribute):
            raise CelError("has() takes a field selection")
        target = _eval(field.value, env)
        return isinstance(target, dict) and field.attr in target
    if not isinstance(node.func, ast.Attribute):
        raise CelError(f"unsupported call: {ast.unparse(node)}")
    target, method = _eval(node.func.value, env), node.func.attr
    if method in ("all", "exists") and isinstance(target, list) and len(node.args) == 2:
        variable, body = node.args
        if not isinstance(variable, ast.Name):
            raise CelError(f"{method}() takes a variable name first")
        results = (_boolean(_eval(body, {**env, variable.id: item})) for item in target)
        return all(results) if method == "all" else any(results)
    if method in ("startsWith", "endsWith") and isinstance(target, str) and len(node.args) == 1:
        argument = _eval(node.args[0], env)
        if not isinstance(argument, str):
            raise CelError(f"{method}() takes a string")
        return target.startswith(argument) if method == "startsWith" else target.endswith(argument)
    raise CelError(f"unsupported call: {ast.unparse(node)}")


def _select(target: Any, key: Any) -> Any:
    if isinstance(target, dict):
        if key not in target:
            raise CelError(f"no such key: {key}")
        return target[key]
    if isinstance(target, list) and isinstance(key, int) and 0 <= key < len(target):
        return target[key]
    raise CelError(f"cannot select {key!r} from {type(target).__name__}")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"no matching overload: {value!r} is not a bool")
    return value
