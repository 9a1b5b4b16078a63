"""POST /v1/events: the HTTP ingest of both modes."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ...ingest.edge import prepare
from ..backend import Unavailable
from ..deps import BackendDep, ConfigDep, SenderDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse

router = APIRouter(tags=["ingest"])


class IngestRejection(BaseModel):
    index: int
    path: str
    reason: str


class IngestResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[IngestRejection]


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IngestResult,
    responses={
        **ERROR_RESPONSES,
        413: {"model": ErrorResponse, "description": "body too large"},
        415: {"model": ErrorResponse, "description": "not a JSON or NDJSON body in UTF-8"},
        422: {"model": IngestResult, "description": "no valid event: each rejection's reason"},
        503: {
            "model": ErrorResponse,
            "description": "not durably accepted; retry after Retry-After seconds",
        },
    },
    summary="Send events (JSON array or NDJSON)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "events as in schemas/*.json: a JSON array, or one per line",
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def post_events(
    request: Request, who: SenderDep, backend: BackendDep, config: ConfigDep
) -> Any:
    """Valid events are durably appended before the answer (202 with counts); each invalid
    event is reported by index with a reason, and its valid neighbours are still accepted
    (422 when none is valid). Re-sent event ids are accepted and have no effect."""
    if who.role not in ("admin", "ingest"):
        raise ApiError(403, "forbidden", f"a {who.role} key may not send events")
    metrics = request.app.state.ingest_metrics
    _check_content_type(request.headers.get("content-type"))
    body = await _read_body(request, config.max_body_bytes)
    events, errors = prepare(
        body, who.tenant_id, config.caller_key_secret, config.max_events_per_request
    )
    metrics.rejected.inc(len(errors))
    rejections = [IngestRejection(index=e.index, path=e.path, reason=e.reason) for e in errors]
    if not events:
        result = IngestResult(accepted=0, duplicates=0, rejected=rejections)
        return JSONResponse(result.model_dump(), status_code=422)
    try:
        new = await backend.ingest(events)
    except Unavailable as exc:
        raise ApiError(
            503, "unavailable", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        ) from exc
    metrics.accepted.inc(new)
    metrics.duplicates.inc(len(events) - new)
    return IngestResult(accepted=new, duplicates=len(events) - new, rejected=rejections)


# JSON, NDJSON under its usual names, and text/plain; no content type at all is read as JSON.
JSON_TYPES = frozenset(
    {"application/json", "application/x-ndjson", "application/ndjson", "application/jsonl",
     "application/x-jsonlines", "application/jsonlines", "text/plain"}
)  # fmt: skip


def _check_content_type(header: str | None) -> None:
    """415 for a body declared as something else than JSON or NDJSON in UTF-8 (a form, a
    file upload, UTF-16): better a clear refusal than a list of puzzling decode errors."""
    if header is None:
        return
    media_type, *params = (part.strip().lower() for part in header.split(";"))
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise ApiError(
            415, "unsupported_media_type",
            f"Content-Type {media_type!r} is not accepted: send application/json (an array "
            "of events) or application/x-ndjson (one event per line)",
        )  # fmt: skip
    if any(charset not in ("utf-8", "utf8") for charset in charsets):
        raise ApiError(415, "unsupported_media_type", "the body must be UTF-8 (charset=utf-8)")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
