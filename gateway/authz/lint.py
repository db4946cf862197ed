"""Findings about a policy file beyond "it parses": bad lines, cluster roles given in one
namespace, duplicates, and allow rules that a deny rule for the same subject always overrides."""

from __future__ import annotations

from dataclasses import dataclass

from .rules import EVERY_NAMESPACE, Entry, PolicyError, scan_policy


@dataclass(frozen=True, slots=True)
class Finding:
    line: int | None
    message: str

    def format(self, path: str) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line is not None else f"{path}: {self.message}"


def lint(content: bytes) -> list[Finding]:
    """Every finding for a policy file's bytes, in line order; an empty list means it is clean."""
    try:
        doc, problems = scan_policy(content)
    except PolicyError as exc:  # not text at all
        return [Finding(None, exc.message)]
    findings = [Finding(problem.line, problem.message) for problem in problems]
    first_seen: dict[object, int] = {}
    for entry in doc.entries:
        if (earlier := first_seen.setdefault(entry.rule, entry.line)) != entry.line:
            findings.append(Finding(entry.line, f"duplicate of line {earlier}: it changes nothing"))
    denies = [entry for entry in doc.entries if entry.rule.effect == "deny"]
    for entry in doc.entries:
        if entry.rule.effect == "allow" and (deny := _overriding_deny(entry, denies)) is not None:
            findings.append(
                Finding(
                    entry.line,
                    f"can never take effect: the deny rule on line {deny.line} ({deny.rule.describe()}) "
                    "takes away everything it grants",
                )
            )
    return sorted(findings, key=lambda finding: finding.line or 0)


def _overriding_deny(allow: Entry, denies: list[Entry]) -> Entry | None:
    """A deny rule for the same subject that covers the allow rule's place and every action it grants."""
    rule = allow.rule
    for deny in denies:
        other = deny.rule
        if (
            other.subject == rule.subject
            and other.namespace in (rule.namespace, EVERY_NAMESPACE)
            and other.notebook in (None, rule.notebook)
            and rule.actions <= other.actions
        ):
            return deny
    return None
