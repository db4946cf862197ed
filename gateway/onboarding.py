"""`Onboarding`: what a sign-in sets up for the user who just signed in.

Self-service (`GATEWAY_AUTO_PROFILE`): someone with no namespace becomes `admin` of a new one named
after them, and on the Kubernetes backend that namespace is made too. In dev (`first_user_admin`),
the first person to sign in where nobody is cluster-admin becomes one. The OAuth callback calls
`welcome()` with the new identity and audits each step it returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .authz.manager import Change, PolicyManager
from .errors import GatewayError
from .identity import Identity
from .profiles import Profile, Provisioner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a sign-in set up: a policy change and, for a self-service profile on Kubernetes,
    the namespace made for it (`provisioned`; `failure` says why it could not be)."""

    change: Change
    provisioned: Profile | None = None
    failure: str = ""


class Onboarding:
    """First-user admin and the self-service profile, over the policy manager and (on the Kubernetes
    backend) the profile provisioner."""

    def __init__(self, policies: PolicyManager, provisioner: Provisioner | None) -> None:
        self.policies, self.provisioner = policies, provisioner

    async def welcome(self, identity: Identity) -> list[Step]:
        """Set up what this sign-in is owed, in order. A namespace that cannot be made is logged and
        reported in its step: the sign-in goes on, and a cluster-admin can retry by the API."""
        return [await self._step(identity, change) for change in await self.policies.sign_in(identity)]

    async def _step(self, identity: Identity, change: Change) -> Step:
        rule = change.rule
        if self.provisioner is None or change.via != "auto-profile" or rule is None:
            return Step(change)
        profile = Profile(rule.namespace, rule.subject)
        try:
            await self.provisioner.create(profile)
        except GatewayError as exc:
            log.error("could not provision profile %s for %s: %s", rule.namespace, identity.subject, exc.message)
            return Step(change, profile, exc.message)
        return Step(change, profile)
