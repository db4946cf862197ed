"""Errors the gateway raises on purpose; `status` and `code` are what the client sees.

GatewayError                 500 internal_error
  BadRequest                 400 bad_request
    InvalidPath              400 invalid_path          (the one path parse refused it)
    InvalidNotebookSpec      400 invalid_notebook      (the create form / JSON was wrong)
  LoginRequired              401 login_required
  Forbidden                  403 forbidden
  NotFound                   404 not_found
    NotebookNotFound         404 notebook_not_found
  MethodNotSupported         405 not_supported         (e.g. the static backend cannot create)
  Conflict                   409 conflict
    NotebookExists           409 notebook_exists
  TooManyRequests            429 too_many_requests     (with Retry-After)
  UpstreamUnavailable        502 upstream_unavailable
  ServiceUnavailable         503 service_unavailable   (a dependency is down, or the notebook is not ready)
    NotebookNotReady         503 notebook_not_ready
  UpstreamTimeout            504 upstream_timeout
"""

from __future__ import annotations

from typing import ClassVar


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


class UpstreamTimeout(GatewayError):
    status, code = 504, "upstream_timeout"
    default_message = "The notebook server took too long to answer."


# -- tenant isolation -------------------------------------------------------------------------------


class RuleLimitReached(GatewayError):
    """A namespace admin's grant would take their namespace past its rule limit, or the shared policies
    past the share kept for namespace admins (the rest is for cluster-admins and profile owners)."""

    status, code = 409, "rule_limit_reached"
    default_message = "This namespace has as many rules as a namespace admin may add."
