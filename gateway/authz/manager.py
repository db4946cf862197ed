"""Keeps the authorizer in step with the policy store: the first load, the watch for edits made
elsewhere (on disk, or by another replica), changes through the API, self-service profiles at
sign-in, and cutting open WebSockets whose access a change took away.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import BadRequest, Conflict, Forbidden, PreconditionRequired
from ..identity import Identity
from ..kube.watch_health import WatchHealth
from .authorizer import PolicyAuthorizer, Snapshot, Source, build_snapshot, personal_namespace
from .rule_limits import with_limited_rule
from .rules import EMPTY, EMPTY_MARKER, EVERY_NAMESPACE, PolicyDoc, PolicyError, Rule, make_rule
from .stores import PolicyStore

log = logging.getLogger(__name__)

# Rules listed in one audit event for a reload; the counts are always complete.
DIFF_LISTED_MAX = 50


@dataclass(frozen=True, slots=True)
class Change:
    """What one write or reload did to the policy, for the audit log and the API's answer."""

    action: str  # policy.grant | policy.revoke | policy.reload
    via: str  # api | replace | auto-profile | first-user | profile | reload
    version_before: str
    version_after: str
    rule: Rule | None = None  # the rule a grant or revoke named (even when it changed nothing)
    added: tuple[Rule, ...] = ()
    removed: tuple[Rule, ...] = ()

    @property
    def changed(self) -> bool:
        return self.version_before != self.version_after

    def details(self) -> dict[str, object]:
        details: dict[str, object] = {
            "via": self.via,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "changed": self.changed,
        }
        if self.rule is not None:
            details["rule"] = self.rule.to_json()
        if self.action == "policy.reload":
            details["added"] = [rule.to_json() for rule in self.added[:DIFF_LISTED_MAX]]
            details["removed"] = [rule.to_json() for rule in self.removed[:DIFF_LISTED_MAX]]
            details["added_count"], details["removed_count"] = len(self.added), len(self.removed)
        return details


def diff(before: PolicyDoc, after: PolicyDoc) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """(added, removed) rules, each in file order."""
    old, new = set(before.rules), set(after.rules)
    added = tuple(dict.fromkeys(rule for rule in after.rules if rule not in old))
    removed = tuple(dict.fromkeys(rule for rule in before.rules if rule not in new))
    return added, removed


class RuleSource(Protocol):
    """Rules the gateway reads but does not own (Kubeflow's Profiles and RoleBindings). `rules()` is
    the current set, each with the object it came from; `generation` goes up whenever it may differ."""

    generation: int

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def rules(self) -> dict[Rule, Source]: ...

    def watch_health(self) -> WatchHealth | None:
        """Its watches of the Kubernetes API, for /readyz (until they have listed, its rules are missing)."""
        ...


# `claims(namespace, owner_name)`: why that user may not take that namespace as their own (it exists
# in Kubernetes, a static route or notebook server is in it, ...), or None. Wired in app.py.
NamespaceClaims = Callable[[str, str], Awaitable[str | None]]
# Names tried for one self-service namespace (`base`, `base-2`, ...) before the sign-in goes on without.
FREE_NAMESPACE_TRIES = 20

GUARDED = (
    "{rule} was set by a cluster-admin and only a cluster-admin may remove or change it "
    "(a namespace admin cannot lift a deny rule set above them)."
)
NO_RULES = (
    "the policy {kind} {location} now holds no rules; version {version} stays in force. If that is meant, "
    "add the line '{marker}' (revoking the last rule through the API adds it)"
)

MANAGED_ELSEWHERE = (
    "{rule} comes from Kubeflow ({kind} {where}) and cannot be changed through the gateway: manage it with "
    "Kubeflow's contributor UI (Manage Contributors) or kubectl."
)


@dataclass(frozen=True, slots=True)
class _Held:
    identity: Identity
    namespace: str
    notebook: str
    cut: Callable[[], None]


class PolicyManager:
    """Owns the `PolicyAuthorizer` and every path by which its policy changes. Writes and reloads
    are serialised by one lock, so versions are installed in the order the store produced them."""

    def __init__(
        self,
        store: PolicyStore,
        *,
        bootstrap_admins: Iterable[str] = (),
        auto_profile: bool = False,
        first_user_admin: bool = False,
        reload_interval_s: float = 0.5,
        external: RuleSource | None = None,
    ) -> None:
        self.store = store
        self.external = external
        self._external: dict[Rule, Source] = {}  # the external rules in force
        self._external_generation = -1
        # Validated now, so a typo in GATEWAY_BOOTSTRAP_ADMINS stops the start instead of locking people out.
        self.bootstrap_admins = tuple(
            make_rule(name if name.startswith("user:") else f"user:{name}", EVERY_NAMESPACE, "cluster-admin").subject
            for name in bootstrap_admins
        )
        self.auto_profile = auto_profile
        self.first_user_admin = first_user_admin
        self.claims: NamespaceClaims | None = None  # set when the backends are up (app.py)
        # Why the policy source's current content is not in force (None when it is): for /readyz.
        self.problem: str | None = None
        self.reload_interval_s = reload_interval_s
        self._doc = EMPTY
        self.authorizer = PolicyAuthorizer(self._compile(EMPTY))
        self._lock = asyncio.Lock()
        self._held: dict[int, _Held] = {}
        self._hold_ids = itertools.count()

    @property
    def doc(self) -> PolicyDoc:
        """The policy document in force (without the bootstrap admins)."""
        return self._doc

    async def open(self) -> None:
        """Open the store (and the external source) and load it (raises `PolicyError` for a malformed
        policy: a start must not guess)."""
        await self.store.open()
        try:
            if self.external is not None:
                await self.external.open()
            async with self._exclusive():
                await self._install(await self.store.load())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self.external is not None:
            await self.external.close()
        await self.store.close()

    # -- changes ----------------------------------------------------------------------------------

    async def grant(
        self, rule: Rule, if_match: str | None = None, *, via: str = "api", limit: int | None = None
    ) -> Change:
        """Add `rule` (idempotent). `via` says what asked, for the audit log; `limit`, for a namespace
        admin's grant, is their namespace's rule limit (`rule_limits`), checked on the latest document."""
        if limit is not None:
            before, after = await self._update(lambda doc: with_limited_rule(doc, rule, limit=limit), if_match)
            return Change("policy.grant", via, before.version, after.version, rule=rule)
        before, after = await self._update(lambda doc: doc.with_rule(rule), if_match)
        return Change("policy.grant", via, before.version, after.version, rule=rule)

    async def revoke(
        self, rule: Rule, if_match: str | None = None, *, via: str = "api", cluster_level: bool = True
    ) -> Change:
        """Remove every line holding `rule` (idempotent). A rule that only Kubeflow gives is refused, and
        so is one guarded `cluster` when the caller is not (`cluster_level`: a cluster-admin or the gateway)."""
        source = self._external.get(rule)
        if source is not None and rule not in self._doc:
            raise Conflict(MANAGED_ELSEWHERE.format(rule=rule.describe(), kind=source.kind, where=source.location))

        def edit(doc: PolicyDoc) -> PolicyDoc:  # checked on the document being changed, under the store's lock
            if not cluster_level and any(held == rule and held.guard == "cluster" for held in doc.rules):
                raise Forbidden(GUARDED.format(rule=rule.describe()))
            return doc.without_rule(rule)

        before, after = await self._update(edit, if_match)
        return Change("policy.revoke", via, before.version, after.version, rule=rule)

    async def replace_rules(self, rules: Iterable[Rule], if_match: str | None) -> tuple[str, str, list[Change]]:
        """Replace the whole rule set (If-Match required); (version before, after, one change per rule)."""
        if if_match is None:
            raise PreconditionRequired()
        wanted = tuple(rules)
        for index, rule in enumerate(wanted):
            source = self._external.get(rule)
            if source is not None and rule not in self._doc:
                message = MANAGED_ELSEWHERE.format(rule=rule.describe(), kind=source.kind, where=source.location)
                raise BadRequest(f"rules[{index}]: {message}", field=f"rules[{index}]")

        def edit(doc: PolicyDoc) -> PolicyDoc:
            if _lines(doc.rules) == _lines(dict.fromkeys(wanted)):
                return doc  # the same rules in the same order: keep the file (and its comments) as it is
            return PolicyDoc.of_rules(wanted)

        before, after = await self._update(edit, if_match)
        added, removed = await asyncio.to_thread(diff, before, after)  # 100k rules: tens of ms
        changes = [Change("policy.revoke", "replace", before.version, after.version, rule=r) for r in removed]
        changes += [Change("policy.grant", "replace", before.version, after.version, rule=r) for r in added]
        return before.version, after.version, changes

    async def sign_in(self, identity: Identity) -> list[Change]:
        """Self-service: someone with no namespace gets `admin` of a new one named after them (a name
        nothing else claims), and (dev) the first person to sign in where nobody is cluster-admin
        becomes one. A username that cannot be a policy subject gets neither (logged)."""
        wants_profile = self.auto_profile and not self._has_namespace(identity)
        wants_admin = self.first_user_admin and not self._has_cluster_admin(self._doc)
        if not (wants_profile or wants_admin):
            return []  # the usual case: no I/O at all
        try:
            user = make_rule(f"user:{identity.subject}", EVERY_NAMESPACE, "cluster-admin").subject
        except PolicyError as exc:
            log.warning(
                "sign-in of %r: no self-service role, the name cannot be a policy subject: %s", identity.subject, exc
            )
            return []
        if user != f"user:{identity.subject}":  # sign-in lower-cases emails; a name that is not so is not theirs
            log.warning("sign-in of %r: no self-service role, the name is not normalised", identity.subject)
            return []
        namespace = await self._free_namespace(identity.subject) if wants_profile else None
        vias: dict[Rule, str] = {}

        def edit(doc: PolicyDoc) -> PolicyDoc:  # runs under the store's lock, on the latest document
            vias.clear()
            if self.first_user_admin and not self._has_cluster_admin(doc):
                vias[Rule(user, EVERY_NAMESPACE, "cluster-admin")] = "first-user"
            # Another replica may have given the name away since it was chosen: then none this time.
            if namespace is not None and not _holds_namespace(doc, identity) and namespace not in _namespaces(doc):
                vias[Rule(user, namespace, "admin")] = "auto-profile"
            for rule in vias:
                doc = doc.with_rule(rule)
            return doc

        try:
            before, after = await self._update(edit)
        except (OSError, PolicyError) as exc:  # the sign-in itself still succeeds, without a profile
            log.error("could not record a profile for %s in %s: %s", identity.subject, self.store.location, exc)
            return []
        for rule, via in vias.items():
            log.info("sign-in of %s: granted %s (%s)", identity.subject, rule.describe(), via)
        return [Change("policy.grant", via, before.version, after.version, rule=rule) for rule, via in vias.items()]

    async def _free_namespace(self, subject: str) -> str | None:
        """The first of `personal_namespace(subject)`, `-2`, `-3`, ... that no rule (stored or Kubeflow's)
        names and nothing else claims; None (logged) when none is, or when a claim cannot be checked."""
        taken = _namespaces(self._doc) | {rule.namespace for rule in self._external}
        base, owner = personal_namespace(subject), subject
        for n in range(1, FREE_NAMESPACE_TRIES + 1):
            suffix = "" if n == 1 else f"-{n}"
            candidate = base[: 63 - len(suffix)].rstrip("-") + suffix
            if candidate in taken:
                continue
            try:
                reason = None if self.claims is None else await self.claims(candidate, owner)
            except Exception as exc:  # unknown is not free: no namespace this time, the sign-in goes on
                log.error("sign-in of %s: could not check whether namespace %s is free: %r", subject, candidate, exc)
                return None
            if reason is None:
                return candidate
            log.info("sign-in of %s: namespace %s is not free (%s)", subject, candidate, reason)
        log.error("sign-in of %s: no free namespace among %s..%s-%d", subject, base, base, FREE_NAMESPACE_TRIES)
        return None

    def made_first_user_admin(self, identity: Identity) -> bool:
        """True when this user is a cluster-admin because, in dev, they signed in first (pages say so)."""
        return self.first_user_admin and any(
            rule.subject == f"user:{identity.subject}" and rule.role == "cluster-admin" and rule.effect == "allow"
            for rule in self._doc.rules
        )

    async def _update(
        self, edit: Callable[[PolicyDoc], PolicyDoc], if_match: str | None = None
    ) -> tuple[PolicyDoc, PolicyDoc]:
        def marked(doc: PolicyDoc) -> PolicyDoc:
            if self._suspect(doc):  # writing on top of an emptied source would make the accident stick
                raise PolicyError(self._no_rules())
            return edit(doc).marked_empty()  # a write that leaves no rules means to (see reload_once)

        async with self._exclusive():
            before, after = await self.store.update(marked, if_match)
            self.problem = None  # the source read well, and holds what this write made
            if after.version != self.authorizer.version:
                # This process sees its own change at once; the others within their reload interval.
                await self._install(after)
            return before, after

    # -- reload -----------------------------------------------------------------------------------

    async def watch(self, on_reload: Callable[[Change, str | None], None]) -> None:
        """Poll the store until cancelled; install each new version, or keep the last good one and
        report why (`on_reload(change, error)`: error is None for a reload that took effect)."""
        while True:
            await asyncio.sleep(self.reload_interval_s)
            await self.reload_once(on_reload)

    async def reload_once(self, on_reload: Callable[[Change, str | None], None]) -> None:
        try:
            async with self._exclusive():
                doc = await self.store.changed()
                if doc is not None and doc.version == self.authorizer.version:
                    self.problem = None  # back to what is in force
                if doc is None or doc.version == self.authorizer.version:
                    await self._reload_external(on_reload)
                    return
                if self._suspect(doc):
                    raise PolicyError(self._no_rules())
                before = self._doc
                await self._install(doc)
            added, removed = await asyncio.to_thread(diff, before, doc)  # 100k rules: tens of ms
        except PolicyError as exc:
            self.problem = str(exc)
            log.error(
                "policy %s %s rejected, version %s stays in force: %s",
                self.store.kind,
                self.store.location,
                self.authorizer.version,
                exc,
            )
            on_reload(Change("policy.reload", "reload", self.authorizer.version, self.authorizer.version), str(exc))
            return
        except OSError as exc:
            log.error("reading the policy file %s failed (%s); trying again", self.store.location, exc)
            return
        self.problem = None
        log.info(
            "policy reloaded from %s: version %s -> %s (+%d -%d rules)",
            self.store.location,
            before.version,
            doc.version,
            len(added),
            len(removed),
        )
        on_reload(Change("policy.reload", "reload", before.version, doc.version, added=added, removed=removed), None)

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """One write or reload at a time, with the cyclic garbage collector paused: compiling 100k
        rules allocates about a million objects, and the collector would walk them again and again
        while the build holds the GIL (a third of the reload time, each pass a stall of the event
        loop). Reference counting frees memory as usual meanwhile."""
        async with self._lock:
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                yield
            finally:
                if was_enabled:
                    gc.enable()

    async def _reload_external(self, on_reload: Callable[[Change, str | None], None]) -> None:
        """Compile again when the external rules changed (under the lock: called from reload_once)."""
        if self.external is None or self.external.generation == self._external_generation:
            return
        before = self._external
        await self._install(self._doc)
        added = tuple(rule for rule in self._external if rule not in before)
        removed = tuple(rule for rule in before if rule not in self._external)
        if added or removed:
            log.info("Kubeflow roles changed: +%d -%d rules", len(added), len(removed))
            version = self.authorizer.version
            on_reload(Change("policy.reload", "kubeflow", version, version, added=added, removed=removed), None)

    async def _install(self, doc: PolicyDoc) -> None:
        if self.external is not None:
            # Read on the loop, where the watch updates it; compiled in a worker thread.
            self._external_generation = self.external.generation
            self._external = self.external.rules()
        external = self._external
        snapshot = await asyncio.to_thread(self._compile, doc, external)  # 100k rules: hundreds of ms
        self._doc = doc
        self.authorizer.replace(snapshot)
        self._sweep()

    def _compile(self, doc: PolicyDoc, external: dict[Rule, Source] | None = None) -> Snapshot:
        return build_snapshot(
            doc, self.bootstrap_admins, kind=self.store.kind, location=self.store.location, external=external
        )

    # -- open WebSockets --------------------------------------------------------------------------

    def hold(self, identity: Identity, namespace: str, notebook: str, cut: Callable[[], None]) -> Callable[[], None]:
        """Register an open connection; `cut()` is called once if a policy change takes its access away.
        Returns the function that unregisters it."""
        key = next(self._hold_ids)
        self._held[key] = _Held(identity, namespace, notebook, cut)

        def release() -> None:
            self._held.pop(key, None)

        return release

    def _sweep(self) -> None:
        """Checked at each swap rather than per relayed message: the decision can only change here."""
        authorizer = self.authorizer
        for key, held in list(self._held.items()):
            if not authorizer.allows(held.identity, held.namespace, "connect", held.notebook):
                del self._held[key]
                log.info(
                    "access of %s to %s/%s revoked: closing its WebSocket",
                    held.identity.subject,
                    held.namespace,
                    held.notebook,
                )
                held.cut()

    # -- helpers ----------------------------------------------------------------------------------

    def _suspect(self, doc: PolicyDoc) -> bool:
        """An emptied file or ConfigMap key is far likelier an accident than a decision to lock everybody
        out: a source that suddenly holds no rules is refused unless it says it means it."""
        return not doc.entries and bool(self._doc.entries) and not doc.empty_on_purpose

    def _no_rules(self) -> str:
        return NO_RULES.format(
            kind=self.store.kind, location=self.store.location, version=self.authorizer.version, marker=EMPTY_MARKER
        )

    def _has_namespace(self, identity: Identity) -> bool:
        return any(namespace != EVERY_NAMESPACE for namespace in self.authorizer.namespaces(identity))

    def _has_cluster_admin(self, doc: PolicyDoc) -> bool:
        return bool(self.bootstrap_admins) or any(
            rule.role == "cluster-admin" and rule.effect == "allow" for rule in doc.rules
        )


def _holds_namespace(doc: PolicyDoc, identity: Identity) -> bool:
    subjects = {f"user:{identity.subject}", *(f"group:{group}" for group in identity.groups)}
    return any(
        rule.subject in subjects
        and rule.effect == "allow"
        and rule.namespace != EVERY_NAMESPACE
        and rule.notebook is None
        for rule in doc.rules
    )


def _namespaces(doc: PolicyDoc) -> set[str]:
    return {rule.namespace for rule in doc.rules}


def _lines(rules: Iterable[Rule]) -> list[str]:
    """Rules as written (with their guards, which rule equality leaves out)."""
    return [rule.to_line() for rule in rules]
