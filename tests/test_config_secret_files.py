"""`GATEWAY_<NAME>_FILE`: every secret setting may be read from a file (a mounted Kubernetes or Docker secret)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway import config

from .test_config import run_cli

SECRETS = [name for name, field in config.Settings.model_fields.items() if config._is_secret(field)]


def test_there_are_secret_settings_to_read() -> None:
    assert {"redis_password", "redis_sentinel_password", "oidc_client_secret", "cookie_secret"} <= set(SECRETS)


@pytest.mark.parametrize("name", SECRETS)
def test_every_secret_setting_can_come_from_a_file(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = f"{name}-from-a-file-" + "s" * 32  # long enough for the cookie secret
    path = tmp_path / name
    path.write_text(value + "\n")  # as `echo "$secret" > file` writes it: the newline is not part of it
    monkeypatch.setenv(f"GATEWAY_{name.upper()}_FILE", str(path))
    secret = getattr(config.load(), name)
    assert isinstance(secret, SecretStr) and secret.get_secret_value() == value


def test_a_secret_set_both_ways_or_unreadable_or_not_a_secret_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_PASSWORD", "from-the-environment")
    monkeypatch.setenv("GATEWAY_REDIS_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("GATEWAY_COOKIE_SECRET_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("GATEWAY_PORT_FILE", str(tmp_path / "port"))
    with pytest.raises(config.ConfigError) as refused:
        config.load()
    assert refused.value.problems == [
        "GATEWAY_PORT_FILE: only secret settings are read from files; set GATEWAY_PORT",
        f"GATEWAY_COOKIE_SECRET_FILE: cannot read {tmp_path / 'missing'}: FileNotFoundError",
        "GATEWAY_REDIS_PASSWORD_FILE: GATEWAY_REDIS_PASSWORD is set too; set one of them",
    ]


def test_check_config_reads_the_files_and_never_prints_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("the-client-secret-itself")
    env = {
        "GATEWAY_OIDC_ISSUER": "https://dex.example.com",
        "GATEWAY_OIDC_CLIENT_SECRET_FILE": str(secret),
        "GATEWAY_COOKIE_SECRET_FILE": str(tmp_path / "unreadable"),
        "GATEWAY_NOTEBOOK_DOMAIN": "nb.example.com",
    }
    refused = run_cli("check-config", env=env)
    assert refused.returncode == 2 and "GATEWAY_COOKIE_SECRET_FILE: cannot read" in refused.stderr
    (tmp_path / "unreadable").write_text("c" * 40)
    accepted = run_cli("check-config", env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert "the-client-secret-itself" not in accepted.stdout + accepted.stderr
