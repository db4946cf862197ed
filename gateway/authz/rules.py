"""The policy rule model: which subject (a user or a group) holds which role where, how a rule is
validated, and the policy file format (Casbin's CSV `p` lines) that stores read and write.

Pure values and functions: no I/O here, so stores, the enforcer, the API and the linter share them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..names import is_dns_label

# Proxied HTTP and WebSocket traffic is `connect` (it runs code); API reads are `view`.
# `manage` is changing who has which role (namespace admins, in their namespace; cluster-admins
# anywhere); `audit` is reading the audit log (namespace "*": auditors and cluster-admins).
Action = Literal["view", "connect", "create", "stop", "start", "delete", "manage", "audit"]
Role = Literal["view", "edit", "admin", "cluster-admin", "auditor"]
Effect = Literal["allow", "deny"]
# Who may change a rule: the namespace's admins (and cluster-admins), or cluster-admins only. A deny
# rule a cluster-admin sets is `cluster`, so the namespace admin it is aimed at cannot lift it.
Guard = Literal["namespace", "cluster"]

ACTIONS: tuple[Action, ...] = get_args(Action)
GUARDS: tuple[Guard, ...] = get_args(Guard)
ROLES: tuple[Role, ...] = get_args(Role)
CLUSTER_ROLES: frozenset[Role] = frozenset({"cluster-admin", "auditor"})
# The roles a grant on one notebook (`notebook` set) may carry: admin and the cluster roles act on
# the namespace or the cluster, never on one server.
NOTEBOOK_ROLES: frozenset[Role] = frozenset({"view", "edit"})
EVERY_NAMESPACE = "*"

_EDIT: frozenset[Action] = frozenset({"view", "connect", "create", "stop", "start", "delete"})
ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    "view": frozenset({"view"}),
    "edit": _EDIT,
    "admin": _EDIT | {"manage"},
    "cluster-admin": frozenset(ACTIONS),
    "auditor": frozenset({"audit"}),
}
# For "the strongest role" a subject holds in one place (the namespace selector shows one).
ROLE_RANK: Mapping[Role, int] = {"view": 1, "auditor": 2, "edit": 3, "admin": 4, "cluster-admin": 5}

MAX_SUBJECT_CHARS = 256
# A name may hold spaces inside, but nothing that breaks a CSV field or reads as a comment. Which
# characters break a line is checked apart (`_unstorable`): `str.splitlines()` splits on more than \n.
_SUBJECT = re.compile(r"(user|group):([^\s,\"#](?:[^,\"#]*[^\s,\"#])?)", re.DOTALL)
# Unicode categories a name may never hold: control characters (C0, DEL, C1 such as U+0085), format
# characters (invisible: U+200B, bidi overrides), line and paragraph separators (U+2028, U+2029),
# surrogates, private-use and unassigned code points.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
FILE_HEADER = (
    "# Notebook Gateway policies (Casbin CSV). One rule per line:\n"
    "#   p, <user:NAME | group:NAME>, <namespace | *>, <notebook | *>, <role>, <allow | deny>[, cluster]\n"
    "# Roles: view, edit, admin (per namespace); cluster-admin, auditor (namespace * only). `cluster`: "
    "only a cluster-admin may change the rule.\n"
)
# A policy source that suddenly holds no rules is taken for an accident (an emptied file or ConfigMap
# key) and refused, unless it carries this line: then it means "nobody but the bootstrap admins".
EMPTY_MARKER = "# notebook-gateway: no rules on purpose"


class PolicyError(ValueError):
    """A rule or policy file that cannot be used; `field` names the JSON field at fault, `line` the file line."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.message = message
        self.field = field
        self.line = line


@dataclass(frozen=True, slots=True)
class Rule:
    """`subject` holds `role` in `namespace` ("*": every namespace), on one `notebook` if set.

    A deny rule takes away every action that role would grant, and wins over any allow. `guard` says
    who may change the rule; it is not part of the rule's identity (a revoke names the rule without it).

    Constructing one validates it (`PolicyError` naming the field at fault), whichever path builds it:
    the API, sign-in, profiles, Kubeflow, the CLI or the file parser. Every rule that exists is one
    the file format writes and reads back unchanged.
    """

    subject: str
    namespace: str
    role: Role
    notebook: str | None = None
    effect: Effect = "allow"
    guard: Guard = field(default="namespace", compare=False)

    def __post_init__(self) -> None:
        _check(self)

    @property
    def kind(self) -> Literal["user", "group"]:
        return "group" if self.subject.startswith("group:") else "user"

    @property
    def actions(self) -> frozenset[Action]:
        return ROLE_ACTIONS[self.role]

    def to_json(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "namespace": self.namespace,
            "role": self.role,
            "notebook": self.notebook,
            "effect": self.effect,
            "guard": self.guard,
        }

    def to_line(self) -> str:
        guard = ", cluster" if self.guard == "cluster" else ""  # the default is left out: old files stay as they are
        return f"p, {self.subject}, {self.namespace}, {self.notebook or '*'}, {self.role}, {self.effect}{guard}"

    def describe(self) -> str:
        where = f"{self.namespace}/{self.notebook}" if self.notebook else self.namespace
        return f"{self.effect} {self.subject} {self.role} in {where}"


def normalise_subject(subject: str) -> str:
    """`user:Alice@Example.com` -> `user:alice@example.com`: sign-in lower-cases email usernames, so a
    rule written with capitals would otherwise never match anyone."""
    if subject.startswith("user:") and "@" in subject:
        return subject.lower()
    return subject


def make_rule(
    subject: object,
    namespace: object,
    role: object,
    notebook: object = None,
    effect: object = "allow",
    guard: object = "namespace",
) -> Rule:
    """A validated rule from untyped input (JSON, a file, a token); `PolicyError` naming the field otherwise."""
    if not isinstance(subject, str):
        raise PolicyError(_SUBJECT_RULE, field="subject")
    for name, value in (("namespace", namespace), ("notebook", notebook)):
        if value is not None and not isinstance(value, str):
            raise PolicyError(f"{name} must be a string", field=name)
    if role not in ROLES:
        raise PolicyError(f"role must be one of {', '.join(ROLES)}", field="role")
    if effect not in ("allow", "deny"):
        raise PolicyError("effect must be allow or deny", field="effect")
    if guard not in GUARDS:
        raise PolicyError("guard must be namespace or cluster", field="guard")
    return Rule(normalise_subject(subject), namespace, role, notebook, effect, guard)  # type: ignore[arg-type]


_SUBJECT_RULE = (
    "subject must be user:<name> or group:<name> (no commas, quotes, '#', line breaks, control or invisible "
    f"characters, at most {MAX_SUBJECT_CHARS} characters)"
)


def _check(rule: Rule) -> None:
    """Why `rule` may not exist, as a `PolicyError`; nothing when it may. Checked after the subject is
    normalised, so a name that lower-cases into something longer or different is judged as stored."""
    subject, namespace, role, notebook = rule.subject, rule.namespace, rule.role, rule.notebook
    if (
        not isinstance(subject, str)
        or len(subject) > MAX_SUBJECT_CHARS
        or not _SUBJECT.fullmatch(subject)
        or _unstorable(subject)
        or normalise_subject(subject) != subject
    ):
        raise PolicyError(_SUBJECT_RULE, field="subject")
    if not isinstance(namespace, str) or not (namespace == EVERY_NAMESPACE or is_dns_label(namespace)):
        raise PolicyError(
            "namespace must be a DNS-1123 label (e.g. team-a) or * for every namespace", field="namespace"
        )
    if role not in ROLES:
        raise PolicyError(f"role must be one of {', '.join(ROLES)}", field="role")
    if rule.effect not in ("allow", "deny"):
        raise PolicyError("effect must be allow or deny", field="effect")
    if rule.guard not in GUARDS:
        raise PolicyError("guard must be namespace or cluster", field="guard")
    if notebook is not None and (not isinstance(notebook, str) or not is_dns_label(notebook)):
        raise PolicyError("notebook must be a DNS-1123 label (a notebook server's name), or absent", field="notebook")
    if role in CLUSTER_ROLES and namespace != EVERY_NAMESPACE:
        raise PolicyError(f"{role} is a cluster role: grant it with namespace *", field="namespace")
    if role == "admin" and namespace == EVERY_NAMESPACE:
        raise PolicyError("admin of every namespace would manage roles everywhere: grant cluster-admin", field="role")
    if notebook is not None and role not in NOTEBOOK_ROLES:
        raise PolicyError("a grant on one notebook can only be view or edit", field="role")
    if notebook is not None and namespace == EVERY_NAMESPACE:
        raise PolicyError("a grant on one notebook needs its namespace, not *", field="namespace")
    # The last word: the line this rule is written as must read back as exactly this rule. The checks
    # above should make this impossible to fail; if one has a hole, the rule is refused, not stored.
    line = rule.to_line()
    if line.splitlines() != [line] or _split(line) != _fields_of(rule):
        raise PolicyError("this rule cannot be stored: its line would not read back the same", field="subject")


def _unstorable(name: str) -> bool:
    """Whether `name` holds a character that splits a line, is invisible or is not text."""
    return any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in name) or len(name.splitlines()) != 1


def _fields_of(rule: Rule) -> list[str]:
    fields = ["p", rule.subject, rule.namespace, rule.notebook or "*", rule.role, rule.effect]
    return [*fields, "cluster"] if rule.guard == "cluster" else fields


def _split(text: str) -> list[str]:
    """A policy line's comma-separated fields, each without the spaces around it."""
    return [part.strip() for part in text.strip().split(",")]


RULE_FIELDS = frozenset({"subject", "namespace", "role", "notebook", "effect", "guard"})


def rule_from_json(body: object) -> Rule:
    """`{"subject", "namespace", "role", "notebook"?, "effect"?, "guard"?}` as a rule; `PolicyError` otherwise."""
    if not isinstance(body, dict):
        raise PolicyError('a rule is a JSON object: {"subject", "namespace", "role", "notebook"?, "effect"?, "guard"?}')
    unknown = sorted(set(body) - RULE_FIELDS)
    if unknown:
        raise PolicyError(f"unknown field(s): {', '.join(unknown)[:200]}", field=unknown[0])
    for name in ("subject", "namespace", "role"):
        if name not in body:
            raise PolicyError(f"{name} is required", field=name)
    return make_rule(
        body["subject"],
        body["namespace"],
        body["role"],
        body.get("notebook"),
        body.get("effect", "allow"),
        body.get("guard", "namespace"),
    )


def parse_line(line: str, number: int) -> Rule | None:
    """One line of a policy file: a rule, or None for a blank line or a `#` comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    fields = _split(text)
    if fields[0] != "p":
        hint = " (role links are built in; only p lines are read)" if fields[0].startswith("g") else ""
        raise PolicyError(f"a rule starts with 'p', not {fields[0][:20]!r}{hint}", line=number)
    if len(fields) not in (6, 7):
        raise PolicyError(
            f"expected 6 fields (p, subject, namespace, notebook, role, effect) and an optional guard, "
            f"found {len(fields)}",
            line=number,
        )
    _, subject, namespace, notebook, role, effect, *guard = fields
    try:
        if guard and guard[0] != "cluster":
            raise PolicyError("the 7th field, if any, must be cluster (only cluster-admins may change the rule)")
        return make_rule(subject, namespace, role, None if notebook == "*" else notebook, effect, *guard)
    except PolicyError as exc:
        raise PolicyError(exc.message, field=exc.field, line=number) from None


@dataclass(frozen=True, slots=True)
class Entry:
    """A rule and the line of the policy file it is on (1-based)."""

    rule: Rule
    line: int


@dataclass(frozen=True, slots=True)
class PolicyDoc:
    """A policy file's content: its lines (comments kept), the rules on them, and a version that is
    the hash of the text, so every replica reading the same file agrees on it."""

    lines: tuple[str, ...]
    entries: tuple[Entry, ...]
    version: str

    @property
    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(entry.rule for entry in self.entries)

    def __contains__(self, rule: object) -> bool:
        return any(entry.rule == rule for entry in self.entries)

    @property
    def empty_on_purpose(self) -> bool:
        """Whether the file says that having no rules is meant (`EMPTY_MARKER`)."""
        return any(line.strip() == EMPTY_MARKER for line in self.lines)

    def with_rule(self, rule: Rule) -> PolicyDoc:
        """This policy with `rule` appended; itself when the rule is already there (grants are idempotent).
        Granting a rule that is there with a weaker guard raises its guard (a grant never lowers one)."""
        held = [entry for entry in self.entries if entry.rule == rule]
        if held and all(entry.rule.guard == "cluster" or rule.guard == "namespace" for entry in held):
            return self
        if held:
            rewritten = list(self.lines)
            for entry in held:
                rewritten[entry.line - 1] = rule.to_line()
            entries = tuple(Entry(rule, e.line) if e.rule == rule else e for e in self.entries)
            return _doc(tuple(rewritten), entries)
        lines = (*self.lines, rule.to_line())
        return _doc(lines, (*self.entries, Entry(rule, len(lines))))

    def marked_empty(self) -> PolicyDoc:
        """This policy, with `EMPTY_MARKER` added when it holds no rules and lacks it: a write that
        leaves no rules (the last revoke, a replace with none) is meant, and says so for every reader."""
        if self.entries or self.empty_on_purpose:
            return self
        return _doc((*self.lines, EMPTY_MARKER), ())

    def without_rule(self, rule: Rule) -> PolicyDoc:
        """This policy without any line holding `rule`; itself when there is none."""
        drop = {entry.line for entry in self.entries if entry.rule == rule}
        if not drop:
            return self
        lines: list[str] = []
        renumbered: dict[int, int] = {}
        for number, line in enumerate(self.lines, 1):
            if number not in drop:
                lines.append(line)
                renumbered[number] = len(lines)
        entries = tuple(Entry(e.rule, renumbered[e.line]) for e in self.entries if e.line not in drop)
        return _doc(tuple(lines), entries)

    @classmethod
    def of_rules(cls, rules: Iterable[Rule]) -> PolicyDoc:
        """A whole new file: the header, then each distinct rule once, in the order given."""
        lines = FILE_HEADER.splitlines()
        entries: list[Entry] = []
        seen: set[Rule] = set()
        for rule in rules:
            if rule not in seen:
                seen.add(rule)
                lines.append(rule.to_line())
                entries.append(Entry(rule, len(lines)))
        return _doc(tuple(lines), tuple(entries))


def _doc(lines: tuple[str, ...], entries: tuple[Entry, ...]) -> PolicyDoc:
    return PolicyDoc(lines, entries, version_of("".join(f"{line}\n" for line in lines).encode()))


def version_of(content: bytes) -> str:
    """The version of a policy file's bytes (the ETag the API sends and If-Match compares)."""
    return hashlib.sha256(content).hexdigest()[:16]


def scan_policy(content: bytes) -> tuple[PolicyDoc, list[PolicyError]]:
    """Every rule a policy file holds and every problem on its lines (the linter wants them all)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"the policy file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = tuple(text.splitlines())
    entries: list[Entry] = []
    problems: list[PolicyError] = []
    for number, line in enumerate(lines, 1):
        try:
            rule = parse_line(line, number)
        except PolicyError as exc:
            problems.append(exc)
            continue
        if rule is not None:
            entries.append(Entry(rule, number))
    return PolicyDoc(lines, tuple(entries), version_of(content)), problems


def parse_policy(content: bytes) -> PolicyDoc:
    """A policy file, or `PolicyError` naming its first bad line (and how many more there are)."""
    doc, problems = scan_policy(content)
    if problems:
        more = f" (and {len(problems) - 1} more bad line(s))" if len(problems) > 1 else ""
        raise PolicyError(f"{problems[0]}{more}", line=None)
    return doc


EMPTY = PolicyDoc.of_rules(())
