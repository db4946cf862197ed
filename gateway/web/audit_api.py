"""`GET /api/audit`: the audit log, newest first, filtered and paged, as JSON or CSV;
`/api/audit/export`: every matching event, streamed (CSV, JSON lines, ECS JSON lines);
`/api/audit/activity`: events per hour by action and outcome, for the page's chart;
`/api/audit/schema`: the event's JSON Schema.

Only those allowed the `audit` action cluster-wide (auditors, cluster-admins) may read the log, and
every read is itself an `audit.read` event. The JSON shape is documented in docs/security.md.
"""

from __future__ import annotations

from aiohttp import web

from .. import keys
from ..audit.activity import activity
from ..audit.events import SCHEMA_PATH
from ..audit.export import CONTENT_TYPES, EXPORT_FORMATS, FILE_NAMES, ExportFormat, ExportProgress, export
from ..audit.query import AuditStore, BadQuery, Filter, StoreUnavailable, make_filter, parse_limit, to_csv
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


def _readable_store(request: web.Request) -> tuple[AuditStore, Filter]:
    """The checks every read shares: the caller may read the log, the filter is valid, there is a
    store, and the read can be recorded (fail_closed)."""
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], "*", "audit")
    try:
        filter = make_filter({name: request.query.get(name, "") for name in FILTERS})
    except BadQuery as exc:
        raise BadRequest(str(exc), field=exc.field) from None
    store = request.app.get(keys.AUDIT_STORE)
    if store is None:
        raise ServiceUnavailable("The audit log cannot be searched on this gateway (it has no audit store).")
    request.app[keys.AUDIT].require_writable()
    return store, filter


@routes.get("/api/audit/export", name="api_audit_export")
async def export_events(request: web.Request) -> web.StreamResponse:
    """Every matching event, newest first, streamed one page at a time (no limit, bounded memory).
    The `audit.read` event is written when the export ends, with how many events it sent and
    whether it finished (a client that hangs up, or a store that fails midway, cuts it short)."""
    fmt = request.query.get("format", "csv")
    if fmt not in EXPORT_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(EXPORT_FORMATS)}", field="format")
    export_format: ExportFormat = fmt  # type: ignore[assignment]
    store, filter = _readable_store(request)
    progress = ExportProgress()
    chunks = export(store, filter, export_format, progress)
    try:
        first = await anext(chunks)  # a store that is down gets a clean 503, not a cut 200
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The audit log cannot be read right now: {exc}") from None
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPES[export_format]}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{FILE_NAMES[export_format]}"',
            "Cache-Control": "no-store",
        }
    )
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
    except StoreUnavailable:
        pass  # the status is sent: the response ends without its last chunk, and the event says so
    finally:
        details: dict[str, object] = {
            "filters": filter.describe(),
            "format": export_format,
            "returned": progress.returned,
            "complete": progress.complete,
            "source": store.source,
            "export": True,
        }
        audit_request.emit(request, "audit.read", "allowed", details=details, done=True)
    return response


@routes.get("/api/audit/activity", name="api_audit_activity")
async def activity_chart(request: web.Request) -> web.Response:
    """Events per hour by action and outcome for the filter (the last 24 hours without `since`)."""
    store, filter = _readable_store(request)
    try:
        body = await activity(store, filter)
    except BadQuery as exc:
        raise BadRequest(str(exc), field=exc.field) from None
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The audit log cannot be read right now: {exc}") from None
    details: dict[str, object] = {
        "filters": filter.describe(),
        "format": "activity",
        "returned": body["events"],
        "source": store.source,
    }
    audit_request.emit(request, "audit.read", "allowed", details=details)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@routes.get("/api/audit/schema", name="api_audit_schema")
async def event_schema(request: web.Request) -> web.FileResponse:
    """The JSON Schema of the events (not secret: any signed-in user may read it)."""
    return web.FileResponse(SCHEMA_PATH, headers={"Content-Type": "application/schema+json"})
