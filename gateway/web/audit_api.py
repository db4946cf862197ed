"""`GET /api/audit`: the audit log, newest first, filtered and paged, as JSON or CSV.

Only those allowed the `audit` action cluster-wide (auditors, cluster-admins) may read it, and
every read is itself an `audit.read` event. The JSON shape is documented in docs/security.md.
"""

from __future__ import annotations

from aiohttp import web

from .. import keys
from ..audit.query import BadQuery, StoreUnavailable, make_filter, parse_limit, to_csv
from ..errors import BadRequest, ServiceUnavailable
from . import audit_request

routes = web.RouteTableDef()

FILTERS = ("user", "namespace", "notebook", "action", "outcome", "since", "until", "text", "q")


@routes.get("/api/audit", name="api_audit")
async def list_events(request: web.Request) -> web.Response:
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], "*", "audit")
    query = request.query
    fmt = response_format(request)
    try:
        filter = make_filter({name: query.get(name, "") for name in FILTERS})
        limit = parse_limit(query.get("limit"))
    except BadQuery as exc:
        raise BadRequest(str(exc), field=exc.field) from None
    store = request.app.get(keys.AUDIT_STORE)
    if store is None:
        raise ServiceUnavailable("The audit log cannot be searched on this gateway (it has no audit store).")
    audit = request.app[keys.AUDIT]
    audit.require_writable()  # a read that cannot be recorded is refused (fail_closed)
    try:
        page = await store.search(filter, cursor=query.get("cursor") or None, limit=limit)
    except BadQuery as exc:
        raise BadRequest(str(exc), field=exc.field) from None
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The audit log cannot be read right now: {exc}") from None
    details = {"filters": filter.describe(), "format": fmt, "returned": len(page.events), "source": store.source}
    audit_request.emit(request, "audit.read", "allowed", details=details)
    headers = {"Cache-Control": "no-store"}
    if page.next_cursor:
        headers["X-Next-Cursor"] = page.next_cursor
    if fmt == "csv":
        headers["Content-Disposition"] = 'attachment; filename="audit.csv"'
        return web.Response(text=to_csv(page.events), content_type="text/csv", charset="utf-8", headers=headers)
    body = {
        "events": page.events,
        "next_cursor": page.next_cursor,
        "scanned": page.scanned,
        "source": store.source,
        "filters": filter.describe(),
    }
    return web.json_response(body, headers=headers)


def response_format(request: web.Request) -> str:
    """`format=json|csv` wins; otherwise CSV when the client asks for text/csv, JSON by default."""
    fmt = request.query.get("format", "")
    if fmt:
        if fmt not in ("json", "csv"):
            raise BadRequest("format must be json or csv", field="format")
        return fmt
    accept = request.headers.get("Accept", "")
    return "csv" if "text/csv" in accept and "application/json" not in accept else "json"
