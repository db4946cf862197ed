"""Where `notebook-gateway login` keeps a person's tokens: one file per gateway URL, readable by them alone.

`$XDG_CONFIG_HOME/notebook-gateway/tokens/<hash of the gateway URL>.json` (`~/.config` without it), mode
0600 in a 0700 directory, written whole (a new file renamed over the old), so a crash never leaves half a
refresh token and another user on the machine never reads one. A file others could read is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path


class TokenStoreError(Exception):
    """The stored login is missing, unreadable or unsafe; the message says what to do."""


@dataclass(frozen=True, slots=True)
class StoredLogin:
    """A person's sign-in at one gateway: what `token` needs to hand out and refresh the bearer token."""

    gateway: str  # the gateway's URL, as given to `login`
    issuer: str
    client_id: str
    user: str  # who signed in (for messages only)
    id_token: str = field(repr=False)
    expires_at: float  # the ID token's `exp`
    refresh_token: str | None = field(default=None, repr=False)


def normalise_gateway(url: str) -> str:
    return url.strip().rstrip("/")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "notebook-gateway"


def path_for(gateway: str) -> Path:
    digest = hashlib.sha256(normalise_gateway(gateway).encode()).hexdigest()[:32]
    return config_dir() / "tokens" / f"{digest}.json"


def save(login: StoredLogin) -> Path:
    path = path_for(login.gateway)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # mkdir's mode is masked by the umask, and an older directory may be wider
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(asdict(login), file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def load(gateway: str) -> StoredLogin:
    path = path_for(gateway)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TokenStoreError(f"Not signed in to {normalise_gateway(gateway)}: run `notebook-gateway login`.") from None
    except OSError as exc:
        raise TokenStoreError(f"Cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd) as file:
        mode = os.fstat(file.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenStoreError(f"{path} may be read by others (mode {stat.filemode(mode)}): sign in again.")
        try:
            data = json.load(file)
            login = StoredLogin(**data)
        except (ValueError, TypeError) as exc:
            raise TokenStoreError(f"{path} is damaged ({exc}): run `notebook-gateway login` again.") from None
    if normalise_gateway(login.gateway) != normalise_gateway(gateway):
        raise TokenStoreError(f"{path} belongs to another gateway: run `notebook-gateway login` again.")
    return login


def forget(gateway: str) -> bool:
    """Remove the stored login; False if there was none."""
    try:
        path_for(gateway).unlink()
    except FileNotFoundError:
        return False
    return True
