"""The accept-anyone development provider runs on loopback only, whatever the settings say."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.config import ConfigError, Settings
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("host", "public_url"),
    [
        ("0.0.0.0", None),
        ("::", None),
        ("10.1.2.3", None),
        ("gateway.example.com", None),
        ("127.0.0.1", "https://notebooks.example.com"),
        ("127.0.0.1", "http://192.168.1.20:8080"),
    ],
)
def test_the_dev_provider_refuses_any_address_other_machines_reach(host: str, public_url: str | None) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        make_settings(backend="local", dev_provider=True, host=host, public_url=public_url)


@pytest.mark.parametrize(
    ("host", "public_url"),
    [("127.0.0.1", None), ("::1", None), ("localhost", "http://localhost:8080"), ("127.0.0.1", "http://a.localhost:1")],
)
def test_the_dev_provider_runs_on_loopback(host: str, public_url: str | None) -> None:
    assert make_settings(backend="local", dev_provider=True, host=host, public_url=public_url).dev_provider


def test_create_app_refuses_settings_that_skipped_validation() -> None:
    # `dev` switches the provider on with model_copy, which runs no validators: the app checks again.
    settings: Settings = make_settings(backend="local", host="0.0.0.0").model_copy(update={"dev_provider": True})
    with pytest.raises(ConfigError, match="loopback only"):
        create_app(settings)
