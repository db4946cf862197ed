"""The rule model: validation with the field at fault, the file format, and edits that keep comments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.authz.rules import PolicyDoc, PolicyError, Rule, make_rule, parse_policy, rule_from_json, scan_policy

GOOD = {"subject": "user:bob@example.com", "namespace": "team-a", "role": "edit"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "bob@example.com"}, "subject"),
        ({"subject": "group:"}, "subject"),
        ({"subject": "group:a,b"}, "subject"),
        ({"subject": "user:x\ny"}, "subject"),
        ({"namespace": "Team_A"}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"role": "owner"}, "role"),
        ({"effect": "maybe"}, "effect"),
        ({"notebook": "NB 1"}, "notebook"),
        ({"role": "cluster-admin"}, "namespace"),  # cluster roles only with *
        ({"role": "auditor"}, "namespace"),
        ({"namespace": "*", "role": "admin"}, "role"),  # admin everywhere would manage every namespace
        ({"notebook": "nb1", "role": "admin"}, "role"),
        ({"namespace": "*", "notebook": "nb1"}, "namespace"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_a_bad_rule_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(PolicyError) as refused:
        rule_from_json({**GOOD, **change})
    assert refused.value.field == field


async def test_a_rule_from_json_with_defaults_and_group_names_with_spaces() -> None:
    assert rule_from_json(GOOD) == Rule("user:bob@example.com", "team-a", "edit", None, "allow")
    rule = rule_from_json({**GOOD, "subject": "group:Data Science", "notebook": "nb1", "effect": "deny"})
    assert rule.to_line() == "p, group:Data Science, team-a, nb1, edit, deny"


async def test_email_usernames_are_lower_cased_as_sign_in_does() -> None:
    assert make_rule("user:Bob@Example.COM", "team-a", "view").subject == "user:bob@example.com"
    assert make_rule("user:Bob", "team-a", "view").subject == "user:Bob"  # not an email: kept as it is
    assert make_rule("group:ML", "team-a", "view").subject == "group:ML"


async def test_a_file_parses_with_comments_and_blank_lines() -> None:
    content = b"# team a\n\np, user:a@x.io, team-a, *, admin, allow\r\n  p , group:g , *, *, auditor , allow\n"
    doc = parse_policy(content)
    assert [(entry.line, entry.rule.role) for entry in doc.entries] == [(3, "admin"), (4, "auditor")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("g, user:a, admin, team-a", "role links are built in"),
        ("p, user:a, team-a, *, admin", "expected 6 fields"),
        ("p, user:a, team-a, *, owner, allow", "role must be one of"),
        ("p, user:a, team-a, *, cluster-admin, allow", "cluster-admin is a cluster role"),
    ],
)
async def test_a_bad_line_is_reported_with_its_number(line: str, message: str) -> None:
    with pytest.raises(PolicyError, match=f"line 2: .*{message}"):
        parse_policy(f"# header\n{line}\np, group:g, *, *, auditor, allow\nx\n".encode())
    _, problems = scan_policy(f"# header\n{line}\n".encode())
    assert [problem.line for problem in problems] == [2]


async def test_a_file_that_is_not_text_is_refused() -> None:
    with pytest.raises(PolicyError, match="not UTF-8"):
        parse_policy(b"p, user:\xff, a, *, view, allow\n")


async def test_grant_and_revoke_edit_lines_and_keep_comments() -> None:
    doc = parse_policy(b"# keep me\np, user:a@x.io, team-a, *, admin, allow\n# and me\n")
    bob = make_rule("user:bob@x.io", "team-a", "view")
    granted = doc.with_rule(bob)
    assert granted.with_rule(bob) is granted  # idempotent
    assert granted.text.endswith("# and me\np, user:bob@x.io, team-a, *, view, allow\n")
    revoked = granted.without_rule(make_rule("user:a@x.io", "team-a", "admin"))
    assert revoked.text == "# keep me\n# and me\np, user:bob@x.io, team-a, *, view, allow\n"
    assert [entry.line for entry in revoked.entries] == [3]
    assert revoked.without_rule(make_rule("user:zed@x.io", "team-a", "view")) is revoked


async def test_the_version_is_the_content_and_survives_a_round_trip() -> None:
    doc = PolicyDoc.of_rules([make_rule("group:g", "*", "auditor"), make_rule("group:g", "*", "auditor")])
    assert len(doc.rules) == 1
    again = parse_policy(doc.text.encode())
    assert (again.version, again.rules) == (doc.version, doc.rules)
    assert doc.with_rule(make_rule("group:h", "*", "auditor")).version != doc.version


# Every character `str.splitlines()` breaks a line on, and a few others that are easy to get wrong.
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
AWKWARD = [*(c for c in LINE_BREAKS if len(c) == 1), *' ,#"\t\x00\u00a0\u200b\u202eİẞ@:*']


@pytest.mark.parametrize("brk", LINE_BREAKS)
async def test_a_subject_holding_any_line_break_is_refused_by_every_constructor(brk: str) -> None:
    subject = f"user:eve{brk}p, user:mallory, *, *, cluster-admin, allow"
    with pytest.raises(PolicyError) as refused:
        make_rule(subject, "team-a", "view")
    assert refused.value.field == "subject"
    with pytest.raises(PolicyError, match="subject"):
        rule_from_json({**GOOD, "subject": f"group:ml{brk}team"})
    with pytest.raises(PolicyError, match="subject"):
        Rule(subject, "*", "cluster-admin")  # built directly, as sign-in used to


async def test_a_name_that_lower_cases_into_something_longer_is_judged_as_stored() -> None:
    # "İ".lower() is two characters: 200 of them fit the limit as written, not as stored.
    with pytest.raises(PolicyError, match="at most 256"):
        make_rule("user:" + "İ" * 200 + "@example.com", "team-a", "view")


names = st.text(st.one_of(st.characters(), st.sampled_from(AWKWARD)), min_size=1, max_size=40)
labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    kind=st.sampled_from(["user:", "group:"]),
    name=names,
    namespace=st.one_of(st.just("*"), labels),
    role=st.sampled_from(["view", "edit", "admin", "cluster-admin", "auditor"]),
    notebook=st.one_of(st.none(), labels),
    effect=st.sampled_from(["allow", "deny"]),
    guard=st.sampled_from(["namespace", "cluster"]),
)
@settings(max_examples=300, deadline=None)
def test_any_rule_the_gateway_accepts_is_written_and_read_back_identical(
    kind: str, name: str, namespace: str, role: str, notebook: str | None, effect: str, guard: str
) -> None:
    try:
        rule = make_rule(kind + name, namespace, role, notebook, effect, guard)
    except PolicyError:
        return  # refused, with a reason: nothing is written
    before = PolicyDoc.of_rules([make_rule("group:staff", "team-a", "view")])
    doc = parse_policy(before.with_rule(rule).text.encode())  # the file stays loadable...
    assert [(r, r.guard) for r in doc.rules][-1] == (rule, rule.guard)  # ...and holds exactly this rule
    assert len(doc.rules) == 1 + (rule != before.rules[0])
    assert rule_from_json(rule.to_json()) == rule  # the API's shape round-trips too
