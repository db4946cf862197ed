"""Everything the gateway reads from its environment, validated once at startup.

Sources, strongest first: explicit arguments, `GATEWAY_*` environment variables, then the TOML
file given with `--config` (flat keys: `port = 8080`). This is the only module that reads either.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "GATEWAY_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Settings(BaseSettings):
    """The gateway's configuration. Field docs are the configuration reference (see `describe()`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    public_url: AnyHttpUrl | None = Field(
        None,
        description="URL users reach the gateway at (scheme, host, port). Default: http://<host>:<port>.",
    )
    backend: Literal["local", "static", "kubernetes"] = Field(
        "kubernetes",
        description="Where notebook servers live: `local` Jupyter processes (dev), "
        "`static` fixed routes from GATEWAY_ROUTES_FILE, or `kubernetes` Notebook resources.",
    )
    routes_file: Path | None = Field(
        None, description="TOML file of [[route]] namespace/name/url entries for the static backend."
    )
    local_dir: Path = Field(
        Path(".dev/notebooks"),
        description="Where the local backend keeps its records, workspaces and server logs.",
    )
    spawner_config: Path | None = Field(
        None,
        description="Spawner form defaults in the shape of Kubeflow's spawner_ui_config.yaml. "
        "Default: the copy shipped with the gateway.",
    )
    upstream_connect_timeout_s: float = Field(5.0, gt=0, description="Connecting to a notebook server.")
    upstream_timeout_s: float = Field(
        60.0, gt=0, description="From sending a request upstream until its response headers arrive."
    )
    upstream_idle_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="Longest silence inside a streamed response body (long-poll, SSE) before it is cut.",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    # NoDecode: the variable is a plain comma-separated list, not JSON.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        (),
        description="Peers (IPs or CIDRs, comma-separated) whose X-Forwarded-* headers are believed.",
    )
    userid_header: str = Field("kubeflow-userid", description="Header carrying the user to notebooks.")
    groups_header: str = Field("kubeflow-groups", description="Header carrying the user's groups.")
    userid_prefix: str = Field("", description="Prefix put before the user in the userid header.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="`json` lines, or `text` for people.")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, list | tuple):
            return value
        networks = []
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
        return tuple(networks)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; the file is only read when `load()` names one.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def base_url(self) -> str:
        """The public origin without a trailing slash, e.g. `http://127.0.0.1:8080`."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class ConfigError(Exception):
    """Settings that cannot be used; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load(config_file: Path | None = None, **overrides: object) -> Settings:
    """Read the settings, reporting every invalid one at once as a `ConfigError`."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError([f"--config {config_file}: no such file"])
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        settings_cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}}
        )
    try:
        return settings_cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError([_describe_error(err) for err in exc.errors()]) from None


def _describe_error(err: object) -> str:
    """One line naming the environment variable, never echoing the value (it may be a secret)."""
    assert isinstance(err, dict)
    field = str(err["loc"][0]) if err.get("loc") else "?"
    return f"{ENV_PREFIX}{field.upper()}: {err['msg']}"


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README's configuration reference."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = "" if field.default in (None, ()) else str(field.default)
        rows.append((f"{ENV_PREFIX}{name.upper()}", default, field.description or ""))
    return rows
