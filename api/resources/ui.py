"""The built-in web UI: its static files (``api/ui/``, shipped in the package) and ``/ui/config.json``, what the
page needs to know that the API's routes do not tell (the live error feed's port and path, whether a token is
needed). Served without the bearer token, so the page can load and ask for one; the data routes keep theirs."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import falcon

from panopticon.api.errors import NotFound
from panopticon.common.settings import Settings

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".json": "application/json", ".ico": "image/x-icon"}
VENDOR_CACHE = "public, max-age=86400"  # libraries copied by `make ui`: change with package-lock.json only
OWN_CACHE = "no-cache"  # the UI's own files: revalidated (ETag) on every load, so an upgrade shows at once
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str
    cache_control: str


def load_file(path: Path, name: str) -> StaticFile:
    body = path.read_bytes()
    content_type = CONTENT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    compressible = content_type.startswith(("text/", "application/json", "image/svg"))
    gzipped = gzip.compress(body, 6, mtime=0) if compressible and len(body) >= GZIP_MIN_BYTES else None
    return StaticFile(body=body, gzipped=gzipped, content_type=content_type,
                      etag=hashlib.sha1(body).hexdigest()[:16],
                      cache_control=VENDOR_CACHE if name.startswith("vendor/") else OWN_CACHE)


def ui_files(directory: Path = UI_DIR) -> dict[str, StaticFile]:
    """Every file under the UI folder by its path relative to it: the only names served (no path walking)."""
    if not directory.is_dir():
        return {}
    return {path.relative_to(directory).as_posix(): load_file(path, path.relative_to(directory).as_posix())
            for path in sorted(directory.rglob("*")) if path.is_file() and not path.name.startswith(".")}


class UiFilesResource:
    """``/`` is ``index.html``; ``/ui/{name}`` any file of the folder, read once at start-up (a few hundred kB,
    the chart library gzipped once)."""

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self._files = files

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str = "index.html") -> None:
        found = self._files.get(name)
        if found is None:
            if name.startswith("vendor/"):
                raise NotFound(f"'{name}' is not built: run `make ui` (needs Node and npm).", "name")
            raise NotFound(f"No UI file '{name}'.", "name")
        resp.cache_control = [found.cache_control]
        resp.etag = found.etag
        resp.append_header("Vary", "Accept-Encoding")
        if found.etag in (req.if_none_match or ()):
            resp.status = falcon.HTTP_304
            resp.content_type = None  # a 304 carries no body, so no Content-Type either
            return
        resp.content_type = found.content_type
        resp.set_header("X-Content-Type-Options", "nosniff")
        if found.gzipped is not None and "gzip" in (req.get_header("Accept-Encoding") or ""):
            resp.set_header("Content-Encoding", "gzip")
            resp.data = found.gzipped
        else:
            resp.data = found.body

    on_head = on_get


class UiConfigResource:
    """``/ui/config.json``: where the live error feed is (port and path; the page adds its own host), whether the
    data routes need a token, and whether the bridge's origin allow-list lets this page in."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        s = self._settings
        allowed = s.origins(s.error_stream_ws_origins)
        page_origin = f"{req.forwarded_scheme}://{req.forwarded_host}"
        resp.cache_control = ["no-cache"]
        resp.media = {
            "error_stream": {"port": s.error_stream_port, "path": s.error_stream_ws_path,
                             "origin_allowed": not allowed or page_origin in allowed},
            "auth_required": bool(s.api_auth_token),
        }

    on_head = on_get
