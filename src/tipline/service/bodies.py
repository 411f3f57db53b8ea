"""Reading request bodies from hostile clients: a byte limit and a time limit, both enforced on
what actually arrives (a lying or missing Content-Length changes nothing), so oversized uploads
and slow-loris senders cost neither memory nor a worker for long."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from tipline.service.errors import HttpError


async def read_limited_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) or a body that takes longer
    than ``timeout`` seconds to arrive (408), as :class:`HttpError` (400 for a bad
    Content-Length or a body cut short)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise HttpError(400, "invalid Content-Length header") from None
        if n > limit:
            raise HttpError(413, f"the request is {n:,} bytes; the limit is {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"the request is over the limit of {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(408, f"the request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise HttpError(400, "the connection closed before the request body was complete") from None
    return b"".join(chunks)
