"""A gateway that needs no Kubernetes loads no Kubernetes library: `kubernetes_asyncio` (about 30 MiB of generated
models and a second of start-up) is imported when the Kubernetes client opens, not with the modules that name its
types. Checked in a fresh interpreter, since this test run has imported it long ago."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
import gateway.cli.main, gateway.app, gateway.backends.kubernetes, gateway.authz.kubeflow, gateway.profiles
print(sorted(name for name in sys.modules if name.startswith("kubernetes")))
from gateway.kube.client import _library
_library()
print("kubernetes_asyncio.client" in sys.modules)
"""


def test_the_kubernetes_library_is_imported_only_when_a_client_needs_it() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr


SIGN_IN_PROBE = """
import sys
import gateway.cli.main, gateway.app, gateway.auth.authenticator, gateway.auth.oidc
print(sorted(name for name in sys.modules if name == "jwt" or name.startswith(("jwt.", "cryptography.hazmat"))))
from gateway.auth.oidc import unverified_claims
unverified_claims("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
print("jwt" in sys.modules)
"""


def test_pyjwt_and_cryptography_are_imported_only_when_a_token_is_read() -> None:
    """A replica serving signed-in sessions reads no JWT: pyjwt and cryptography's primitives (about 10 MiB) wait
    for the first sign-in, bearer request or logout token. The dev provider, which signs, loads only in dev mode."""
    done = subprocess.run([sys.executable, "-c", SIGN_IN_PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr
