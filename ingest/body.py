"""A request's body as bytes, within INGEST_MAX_BODY_MB both on the wire and after ``Content-Encoding: gzip``.

The limit holds before anything is buffered beyond it: a declared ``Content-Length`` above it is refused unread,
a chunked body is read to one byte past it, and gzip is inflated with ``max_length`` so a small bomb never
expands past the limit in memory.
"""

from __future__ import annotations

import zlib
from typing import Protocol

from panopticon.ingest.errors import BadBody, TooLarge, UnsupportedMedia
from panopticon.ingest.wire import Encoding, encoding_of

READ_CHUNK = 1 << 20
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer only (no raw deflate, no zlib)


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def request_encoding(content_type: str | None) -> Encoding:
    encoding = encoding_of(content_type)
    if encoding is None:
        raise UnsupportedMedia(f"Content-Type {content_type or '(none)'!r} is not supported: "
                               "send application/x-protobuf or application/json")
    return encoding


def read_body(stream: Readable, content_length: int | None, limit: int) -> bytes:
    """The raw body; TooLarge past ``limit`` bytes (without reading a body whose declared length is past it)."""
    if content_length is not None and content_length > limit:
        raise TooLarge(_too_large("body", content_length, limit))
    wanted = limit + 1 if content_length is None else content_length
    chunks: list[bytes] = []
    size = 0
    while size < wanted:
        chunk = stream.read(min(wanted - size, READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise TooLarge(_too_large("body", size, limit, at_least=True))
    return b"".join(chunks)


def decode_content(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body after its Content-Encoding: identity or gzip (415 for anything else)."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        return gunzip(body, limit)
    raise UnsupportedMedia(f"Content-Encoding {content_encoding!r} is not supported: send gzip or none")


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate every gzip member of ``data``; TooLarge as soon as the output would pass ``limit`` bytes,
    BadBody for anything that is not complete gzip."""
    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while True:
            inflater = zlib.decompressobj(GZIP_WBITS)
            chunk = inflater.decompress(rest, limit - size + 1)
            size += len(chunk)
            if size > limit:
                raise TooLarge(_too_large("decompressed body", size, limit, at_least=True))
            out.append(chunk)
            if not inflater.eof:
                raise BadBody("the gzip body is truncated")
            rest = inflater.unused_data
            if not rest:
                return b"".join(out)
    except zlib.error as exc:
        raise BadBody(f"the body is not valid gzip: {exc}") from None


def _too_large(what: str, size: int, limit: int, at_least: bool = False) -> str:
    amount = f"more than {limit}" if at_least else str(size)
    return f"the {what} is {amount} bytes; this receiver accepts at most {limit} bytes (INGEST_MAX_BODY_MB)"
