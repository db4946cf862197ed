"""Settings: sources and their order, and errors that name every bad variable at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config
from tests.conftest import unused_port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_toml_file_sets_values_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "gateway.toml"
    (routes := tmp_path / "routes.toml").write_text("")
    file.write_text(f'port = 9000\nbackend = "static"\nroutes_file = "{routes}"\nupstream_timeout_s = 12.5\n')
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    settings = config.load(file)
    assert (settings.port, settings.backend, settings.upstream_timeout_s) == (9100, "static", 12.5)


def test_a_misspelt_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text("prot = 9000\n")
    with pytest.raises(config.ConfigError) as bad:
        config.load(file)
    assert bad.value.problems == ["GATEWAY_PROT: Extra inputs are not permitted"]


def test_other_bearer_issuers_come_from_json_in_the_environment_or_tables_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text(
        '[[bearer_issuers]]\nissuer = "https://kubernetes.default.svc.cluster.local"\n'
        'audiences = ["notebook-gateway"]\nusername_prefix = ""\n'
        'jwks_url = "https://kubernetes.default.svc/openid/v1/jwks"\n'
    )
    [cluster] = config.load(file).bearer_issuers
    assert (str(cluster.jwks_url), cluster.username_claim) == ("https://kubernetes.default.svc/openid/v1/jwks", "sub")
    assert cluster.issuer == "https://kubernetes.default.svc.cluster.local"  # exactly: tokens' iss must equal it
    monkeypatch.setenv(
        "GATEWAY_BEARER_ISSUERS", '[{"issuer": "https://ci.example", "audiences": ["gw"], "username_prefix": "ci:"}]'
    )
    [ci] = config.load(file).bearer_issuers  # the environment wins
    assert ci.username_prefix == "ci:"


@pytest.mark.parametrize(
    "entries",
    [
        [{"issuer": "https://ci.example", "audiences": ["gw"]}],  # no username_prefix: must be chosen
        [{"issuer": "https://ci.example", "audiences": [], "username_prefix": ""}],  # tokens for anyone
        [{"issuer": "https://ci.example", "audiences": ["gw"], "username_prefix": "", "extra": 1}],
        [{"issuer": "https://idp.example/", "audiences": ["gw"], "username_prefix": ""}],  # the provider itself
    ],
)
def test_a_bearer_issuer_must_say_whom_its_tokens_are_for_and_how_its_users_are_named(entries: object) -> None:
    with pytest.raises(config.ConfigError) as bad:
        config.load(oidc_issuer="https://idp.example", bearer_issuers=entries)
    assert all(problem.startswith("GATEWAY_BEARER_ISSUERS:") for problem in bad.value.problems)


def test_allowed_email_domains_are_a_list_of_lower_case_domains() -> None:
    settings = config.load(oidc_allowed_email_domains="Example.COM, @example.org")
    assert settings.oidc_allowed_email_domains == ("example.com", "example.org")


def test_trusted_proxies_are_a_comma_separated_list_of_networks() -> None:
    settings = config.load(trusted_proxies="10.0.0.0/8, 192.168.1.7")
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32"]


def test_the_dashboard_origin_is_one_origin_written_the_way_browsers_compare_it() -> None:
    assert (
        config.load(dashboard_origin="HTTPS://Kubeflow.Example.com/").dashboard_origin == "https://kubeflow.example.com"
    )
    assert config.load(dashboard_origin="http://127.0.0.1:8080").dashboard_origin == "http://127.0.0.1:8080"
    assert config.load().dashboard_origin is None


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://*.example.com",
        "https://kf.example.com/dashboard",
        "https://kf.example.com 'self'",
        "https://kf.example.com; script-src *",
        "https://user@kf.example.com",
        "javascript://kf.example.com",
        "kf.example.com",
        "https://kf.example.com:99999",
    ],
)
def test_a_dashboard_origin_that_is_not_exactly_one_origin_is_refused(origin: str) -> None:
    # It goes into the pages' Content-Security-Policy: nothing but one origin may get there.
    with pytest.raises(config.ConfigError, match="DASHBOARD_ORIGIN"):
        config.load(dashboard_origin=origin)


def test_a_notebook_origin_can_never_be_the_dashboard() -> None:
    with pytest.raises(config.ConfigError, match="notebooks' code runs there"):
        config.load(notebook_domain="nb.example.com", dashboard_origin="https://evil--alice.nb.example.com")


def test_the_public_url_defaults_to_the_listening_address() -> None:
    assert config.load(host="127.0.0.1", port=8181).base_url == "http://127.0.0.1:8181"
    assert config.load(public_url="https://nb.example.com/").base_url == "https://nb.example.com"


def test_check_config_reports_every_invalid_setting_with_its_variable() -> None:
    result = run_cli(
        "check-config",
        env={"GATEWAY_PORT": "http", "GATEWAY_BACKEND": "docker", "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/33"},
    )
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr
    for variable in ("GATEWAY_PORT", "GATEWAY_BACKEND", "GATEWAY_TRUSTED_PROXIES"):
        assert variable in result.stderr


def test_check_config_passes_on_valid_settings(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('backend = "local"\noidc_issuer = "https://dex.example.com"\nnotebook_domain = "nb.example.com"\n')
    secrets = {"GATEWAY_OIDC_CLIENT_SECRET": "client-secret-value", "GATEWAY_COOKIE_SECRET": "c" * 32}
    result = run_cli("--config", str(file), "check-config", env=secrets)
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_serve_needs_a_notebook_domain_or_an_explicit_single_origin(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_text('backend = "local"\noidc_issuer = "https://dex.example.com"\n')
    secrets = {"GATEWAY_OIDC_CLIENT_SECRET": "client-secret-value", "GATEWAY_COOKIE_SECRET": "c" * 32}
    result = run_cli("--config", str(file), "check-config", env=secrets)
    assert result.returncode == 2
    assert "GATEWAY_NOTEBOOK_DOMAIN: required for isolated notebook origins" in result.stderr
    result = run_cli("--config", str(file), "check-config", env={**secrets, "GATEWAY_NOTEBOOK_ORIGINS": "single"})
    assert result.returncode == 0, result.stderr


def test_serve_needs_a_real_provider_secrets_and_redis_and_never_echoes_a_secret() -> None:
    result = run_cli(
        "check-config",
        env={
            "GATEWAY_SESSION_STORE": "memory",
            "GATEWAY_DEV_PROVIDER": "true",
            "GATEWAY_COOKIE_SECRET": "tooshort-secret",
        },
    )
    assert result.returncode == 2
    assert "GATEWAY_COOKIE_SECRET: Value error, must be at least 32 characters" in result.stderr
    assert "tooshort-secret" not in result.stderr
    result = run_cli("check-config", env={"GATEWAY_SESSION_STORE": "memory", "GATEWAY_DEV_PROVIDER": "true"})
    for variable in ("DEV_PROVIDER", "OIDC_ISSUER", "OIDC_CLIENT_SECRET", "COOKIE_SECRET", "SESSION_STORE"):
        assert f"GATEWAY_{variable}:" in result.stderr


def serve_settings(tmp_path: Path) -> dict[str, str]:
    """Settings `serve` starts with (up to reaching Redis): a provider, its secrets, a backend."""
    return {
        "GATEWAY_OIDC_ISSUER": "https://dex.example.com",
        "GATEWAY_OIDC_CLIENT_SECRET": "client-secret-value",
        "GATEWAY_COOKIE_SECRET": "c" * 32,
        "GATEWAY_BACKEND": "local",
        "GATEWAY_LOCAL_DIR": str(tmp_path / "notebooks"),
        "GATEWAY_AUDIT_DIR": str(tmp_path / "audit"),
        "GATEWAY_NOTEBOOK_DOMAIN": "nb.example.com",
        "GATEWAY_PORT": str(unused_port()),
    }


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({"GATEWAY_BACKEND": "static"}, "GATEWAY_ROUTES_FILE: Value error, required when GATEWAY_BACKEND=static"),
        ({"GATEWAY_BOOTSTRAP_ADMINS": 'root@example.com, "root"'}, "GATEWAY_BOOTSTRAP_ADMINS: subject must be"),
        ({"GATEWAY_ROUTES_FILE": "/nonexistent/routes.toml"}, "GATEWAY_ROUTES_FILE: Path does not point to a file"),
        ({"GATEWAY_SPAWNER_CONFIG": "/nonexistent/spawner.yaml"}, "GATEWAY_SPAWNER_CONFIG: Path does not point to"),
    ],
)
def test_check_config_finds_what_serve_would_refuse_at_start(bad: dict[str, str], problem: str, tmp_path: Path) -> None:
    env = serve_settings(tmp_path) | bad
    checked = run_cli("check-config", env=env)
    assert checked.returncode == 2
    assert problem in checked.stderr
    served = run_cli("serve", env=env)  # the same settings: serve stops with the same problem
    assert served.returncode == 2
    assert problem in served.stderr


def test_serve_refuses_to_start_on_invalid_settings() -> None:
    result = run_cli("serve", env={"GATEWAY_UPSTREAM_TIMEOUT_S": "-1"})
    assert result.returncode == 2
    assert "GATEWAY_UPSTREAM_TIMEOUT_S" in result.stderr


def test_a_missing_config_file_is_reported() -> None:
    result = run_cli("--config", "/nonexistent/gateway.toml", "check-config")
    assert result.returncode == 2
    assert "/nonexistent/gateway.toml: no such file" in result.stderr


def test_every_setting_is_described_for_the_reference() -> None:
    rows = config.describe()
    assert {name for name, _, _ in rows} >= {"GATEWAY_HOST", "GATEWAY_PORT", "GATEWAY_BACKEND", "GATEWAY_ROUTES_FILE"}
    assert all(description for _, _, description in rows)
