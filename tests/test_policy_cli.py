"""`notebook-gateway policy check` and `policy lint`, run as an admin would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

EXAMPLE = Path(__file__).parent.parent / "policies" / "policy.csv"


async def test_check_says_allowed_and_which_rule_decided(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "check", "--user", "carol", "--group", "ml-team", "--namespace", "team-a", "--action", "connect"]
    assert main([*argv, "--file", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("allowed: carol may connect in namespace team-a.\n")
    assert f"p, group:ml-team, team-a, *, edit, allow    ({EXAMPLE}:" in out


async def test_check_says_denied_with_the_deny_rule_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "check", "--user", "Dave@Example.com", "--group", "ml-team", "--group", "contractors"]
    assert main([*argv, "--namespace", "team-a", "--action", "view", "--file", str(EXAMPLE), "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert (answer["allowed"], answer["decision"]) == (False, "deny")
    assert [rule["subject"] for rule in answer["rules"]] == ["group:contractors"]


async def test_check_on_one_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["policy", "check", "--user", "bob@example.com", "--namespace", "team-a", "--file", str(EXAMPLE)]
    assert main([*argv, "--action", "connect", "--notebook", "nb1"]) == 0
    assert main([*argv, "--action", "connect", "--notebook", "nb2"]) == 1
    assert (
        "denied: bob@example.com has no role that allows them to connect notebook server nb2" in capsys.readouterr().out
    )


async def test_check_refuses_a_malformed_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.csv"
    bad.write_text("p, user:a, team-a\n")
    argv = ["policy", "check", "--user", "a", "--namespace", "team-a", "--action", "view", "--file", str(bad)]
    assert main(argv) == 2
    assert "line 1: expected 6 fields" in capsys.readouterr().err


async def test_the_shipped_example_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", str(EXAMPLE)]) == 0
    assert "no findings" in capsys.readouterr().out


async def test_lint_reports_every_kind_of_problem_by_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.csv"
    lines = [
        "# a comment",
        "p, user:bob@example.com, team-a, *, owner, allow",  # 2: unknown role
        "p, user:bob@example.com, team-a, *, cluster-admin, allow",  # 3: a cluster role in one namespace
        "p, group:ml, team-a, *, view, allow",
        "p, group:ml, team-a, *, view, allow",  # 5: duplicate
        "p, group:ml, team-a, *, edit, deny",  # takes away what lines 4 and 5 grant
        "p, group:ml, team-a, nb1, edit, allow",  # 7: never takes effect either
        "p, group:ml, team-b, *, edit, allow",  # fine: another namespace
        "p, user:carol, team-a",  # 9: syntax
    ]
    path.write_text("\n".join(lines) + "\n")
    assert main(["policy", "lint", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in out] == ["2", "3", "4", "5", "5", "7", "9"]
    assert "role must be one of" in out[0] and "cluster-admin is a cluster role" in out[1]
    assert "deny rule on line 6" in out[2] and "duplicate of line 4" in out[3]
    assert "expected 6 fields" in out[6]


async def test_lint_of_a_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read it" in capsys.readouterr().err
