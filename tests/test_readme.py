"""The README's configuration reference is the one the code generates."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.main import config_reference

README = Path(__file__).parent.parent / "README.md"


def test_the_readme_lists_every_setting_as_the_code_describes_it() -> None:
    text = README.read_text()
    start = text.index("<!-- config-reference")
    end = text.index("<!-- end config-reference -->")
    section = text[text.index("\n", start) + 1 : end].strip()
    assert section == config_reference(), "run `notebook-gateway config-reference` and paste it into README.md"
