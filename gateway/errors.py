"""Every error the gateway raises on purpose; `status` and `code` are what the client sees.

GatewayError                 500 internal_error
  BadRequest                 400 bad_request
    InvalidPath              400 invalid_path          (the one path parse refused it)
    InvalidNotebookSpec      400 invalid_notebook      (the create form / JSON was wrong)
    InvalidCallback          400 invalid_callback      (a sign-in's state, binding cookie or code did not match)
    InvalidHandshake         400 invalid_notebook_login (a notebook origin's sign-in code or state did not match)
  LoginRequired              401 login_required
  LoginFailed                401 login_failed          (a page, not another round to the provider)
  InvalidToken               401 invalid_token         (a bearer, ID or logout token did not check out)
    TokenRequestRefused      401 invalid_token         (the token endpoint answered an OAuth error)
  RefreshRejected            401 login_required        (the provider refused the refresh token: the session ends)
  Forbidden                  403 forbidden
    NotAllowed               403 not_allowed           (the provider vouched, the sign-in rules keep the user out)
  NotFound                   404 not_found
    NotebookNotFound         404 notebook_not_found
  MethodNotSupported         405 not_supported         (e.g. the static backend cannot create)
  Conflict                   409 conflict
    NotebookExists           409 notebook_exists
  RuleLimitReached           409 rule_limit_reached    (a namespace admin's grant past GATEWAY_NAMESPACE_RULE_LIMIT)
  PreconditionFailed         412 version_mismatch      (the policies changed since the client read them)
  PayloadTooLarge            413 payload_too_large     (a body over its limit; the message names it)
  PolicyTooLarge             413 policy_too_large      (over what a ConfigMap holds)
  UnsupportedEncoding        415 unsupported_encoding  (a compressed body: the gateway never inflates one)
  PreconditionRequired       428 version_required      (replacing the policies needs If-Match)
  TooManyRequests            429 too_many_requests     (with Retry-After)
    SignInLimited            429 too_many_requests     (failed sign-ins from this client or for this user)
    TooManyConnections       429 too_many_connections  (one user's share of notebook connections is used up)
  UpstreamUnavailable        502 upstream_unavailable
  IdPUnavailable             502 idp_unavailable
  ServiceUnavailable         503 service_unavailable   (a dependency is down, or the notebook is not ready)
    NotebookNotReady         503 notebook_not_ready
    AuditUnavailable         503 audit_unavailable     (a must-audit act whose event cannot be written)
  UpstreamTimeout            504 upstream_timeout
  KubernetesError            500 internal_error        (raised by gateway/kube/ only; each answers as its other base)
    KubernetesUnavailable    503 service_unavailable   (no answer, 429 or 5xx: try again later)
    KubernetesForbidden      503 service_unavailable   (401/403: the gateway's own RBAC is short)
    KubernetesNotFound       404 not_found
    KubernetesConflict       409 conflict              (`already_exists`: a create met an object of that name)
    KubernetesInvalid        400 bad_request           (400/422: the API server refused the object)
    KubernetesGone           500 internal_error        (410: a watch's resourceVersion expired; relist)
  MisdirectedRequest         421 misdirected_request   (a notebook path off its own host, or another path on it)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal


class GatewayError(Exception):
    """Base of every error the gateway answers with; the message is safe to show to the client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The gateway failed to handle this request."

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.field = field  # the form / JSON field at fault, so pages can show the error beside it
        self.headers: dict[str, str] = {}  # extra response headers, e.g. Retry-After


class BadRequest(GatewayError):
    status, code = 400, "bad_request"
    default_message = "The request is malformed."


class InvalidPath(BadRequest):
    code = "invalid_path"
    default_message = "The request path is not allowed."


class InvalidNotebookSpec(BadRequest):
    code = "invalid_notebook"
    default_message = "The notebook server settings are invalid."


class LoginRequired(GatewayError):
    status, code = 401, "login_required"
    default_message = "Sign in first."


class Forbidden(GatewayError):
    status, code = 403, "forbidden"
    default_message = "You may not do this."


class NotFound(GatewayError):
    status, code = 404, "not_found"
    default_message = "Nothing is here."


class NotebookNotFound(NotFound):
    code = "notebook_not_found"
    default_message = "No such notebook server."


class MethodNotSupported(GatewayError):
    status, code = 405, "not_supported"
    default_message = "This backend does not support that operation."


class Conflict(GatewayError):
    status, code = 409, "conflict"
    default_message = "The request conflicts with the current state."


class NotebookExists(Conflict):
    code = "notebook_exists"
    default_message = "A notebook server with that name already exists."


class TooManyRequests(GatewayError):
    status, code = 429, "too_many_requests"
    default_message = "Too many failed sign-ins; wait before trying again."

    def __init__(self, message: str | None = None, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class UpstreamUnavailable(GatewayError):
    status, code = 502, "upstream_unavailable"
    default_message = "The notebook server did not answer."


class ServiceUnavailable(GatewayError):
    status, code = 503, "service_unavailable"
    default_message = "A service the gateway depends on is unavailable; try again shortly."


class NotebookNotReady(ServiceUnavailable):
    code = "notebook_not_ready"
    default_message = "The notebook server is not running."


# Sign-in, tokens, policies and audit: raised by the components of those names, answered like the rest.


class InvalidCallback(BadRequest):
    code = "invalid_callback"
    default_message = "This sign-in could not be completed; please sign in again."


class InvalidHandshake(BadRequest):
    code = "invalid_notebook_login"
    default_message = "This notebook sign-in could not be completed; open the notebook again."


class LoginFailed(GatewayError):
    """Not `LoginRequired`: a failed sign-in shows a page, it does not send the browser round again."""

    status, code = 401, "login_failed"
    default_message = "Signing in failed."


class InvalidToken(GatewayError):
    status, code = 401, "invalid_token"
    default_message = "The token is not valid."

    def __init__(self, message: str | None = None, *, signed_claims: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        # The claims of a token whose signature checked out but which was refused for another reason
        # (expired, another audience, a stale nonce): the issuer vouches for them, so the user they
        # name may be counted against. A forged token's claims never are.
        self.signed_claims = signed_claims
        self.username: str | None = None  # set by whoever knows how to read a username from the claims


class TokenRequestRefused(InvalidToken):
    """The token endpoint answered with an OAuth error (`error` is its code, e.g. `authorization_pending`)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"The identity provider refused the token request: {error}.")
        self.error = error


class RefreshRejected(GatewayError):
    """The provider refused a refresh token (`invalid_grant`): the session must end."""

    status, code = 401, "login_required"
    default_message = "Your sign-in has ended; sign in again."


class NotAllowed(Forbidden):
    """The provider vouched for this user, but the gateway's sign-in rules keep them out."""

    code = "not_allowed"
    default_message = "You may not sign in to this gateway."

    def __init__(self, message: str, *, username: str) -> None:
        super().__init__(message)
        self.username = username


class PreconditionFailed(GatewayError):
    status, code = 412, "version_mismatch"
    default_message = "The policies changed since you read them; reload them and try again."


class PolicyTooLarge(GatewayError):
    status, code = 413, "policy_too_large"
    default_message = "The policies would not fit in a ConfigMap (1 MiB)."


class PreconditionRequired(GatewayError):
    status, code = 428, "version_required"
    default_message = "Send If-Match with the version you read (GET /api/policies) to replace the policies."


class SignInLimited(TooManyRequests):
    """Too many failed sign-ins from this client (`by` "ip"), or for this user (`by` "user")."""

    def __init__(
        self, message: str, *, retry_after_s: int, by: Literal["ip", "user"], username: str | None = None
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.by = by
        self.username = username  # who was signing in, when the issuer vouched for the name


class IdPUnavailable(GatewayError):
    status, code = 502, "idp_unavailable"
    default_message = "The identity provider is unreachable; signing in is not possible right now."


class AuditUnavailable(ServiceUnavailable):
    code = "audit_unavailable"
    default_message = "The audit log cannot be written, so this action is refused; try again shortly."


class UpstreamTimeout(GatewayError):
    status, code = 504, "upstream_timeout"
    default_message = "The notebook server took too long to answer."


# -- the Kubernetes API: raised by gateway/kube/, the one place its answers are translated -------------


class KubernetesError(GatewayError):
    """A Kubernetes API call failed. `api_status` is the API server's HTTP status (0 when no answer
    came), `reason` its Status reason and `detail` its message: for logs and /readyz, which
    `description` gives. `message` is what a client sees. Defines no status of its own, so a
    subclass answers with that of its other base."""

    default_message = "The Kubernetes API failed to handle the gateway's request."

    def __init__(self, message: str | None = None, *, api_status: int = 0, reason: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.api_status, self.reason, self.detail = api_status, reason, detail

    @property
    def description(self) -> str:
        return f"{self.api_status} {self.reason}: {self.detail}"


class KubernetesUnavailable(KubernetesError, ServiceUnavailable):
    default_message = "Kubernetes API unavailable"


class KubernetesForbidden(KubernetesError, ServiceUnavailable):
    default_message = "Kubernetes API unavailable: the gateway is not allowed to do this in the cluster."


class KubernetesNotFound(KubernetesError, NotFound):
    default_message = "The Kubernetes object does not exist."


class KubernetesConflict(KubernetesError, Conflict):
    default_message = "The Kubernetes object exists already, or changed meanwhile."

    @property
    def already_exists(self) -> bool:
        """A create met an object of that name (rather than a write meeting a newer version)."""
        return self.reason == "AlreadyExists"


class KubernetesInvalid(KubernetesError, BadRequest):
    default_message = "The cluster refused the request."


class KubernetesGone(KubernetesError):
    default_message = "The Kubernetes watch expired."


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"
    default_message = "The request body is too large."


class UnsupportedEncoding(GatewayError):
    status, code = 415, "unsupported_encoding"
    default_message = "The gateway does not decompress request bodies: send them without Content-Encoding."


class TooManyConnections(TooManyRequests):
    """One user's share of the gateway's connections to notebooks is used up (per replica)."""

    code = "too_many_connections"
    default_message = "You have too many connections to notebook servers open; close some and try again."


class MisdirectedRequest(GatewayError):
    """The wrong host: a notebook is served on its own origin, and that origin serves nothing else."""

    status, code = 421, "misdirected_request"
    default_message = "This host does not serve that path."


# -- tenant isolation -------------------------------------------------------------------------------


class RuleLimitReached(GatewayError):
    """A namespace admin's grant would take their namespace past its rule limit, or the shared policies
    past the share kept for namespace admins (the rest is for cluster-admins and profile owners)."""

    status, code = 409, "rule_limit_reached"
    default_message = "This namespace has as many rules as a namespace admin may add."
