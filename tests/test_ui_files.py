"""The web UI's static routes and ``/ui/config.json`` (no cluster: the search client is never asked)."""

from __future__ import annotations

import gzip
from pathlib import Path

import falcon.testing
import pytest

from panopticon.api.app import build_search, create_app
from panopticon.api.resources.ui import UI_DIR, ui_files
from panopticon.common.settings import load_settings

TOKEN = "s3cret"


def client(**env: str) -> falcon.testing.TestClient:
    settings = load_settings(env)
    return falcon.testing.TestClient(create_app(settings, build_search(settings)))


@pytest.fixture
def app() -> falcon.testing.TestClient:
    return client(API_AUTH_TOKEN=TOKEN, ERROR_STREAM_PORT="3999", ERROR_STREAM_WS_PATH="/ws/x")


@pytest.mark.parametrize("path, content_type, file", [
    ("/", "text/html; charset=utf-8", "index.html"),
    ("/ui/index.html", "text/html; charset=utf-8", "index.html"),
    ("/ui/app.js", "text/javascript; charset=utf-8", "app.js"),
    ("/ui/pages/trace.js", "text/javascript; charset=utf-8", "pages/trace.js"),
    ("/ui/style.css", "text/css; charset=utf-8", "style.css"),
], ids=["root", "index", "app", "page", "css"])
def test_files_are_served_without_the_token(app: falcon.testing.TestClient, path: str, content_type: str,
                                            file: str) -> None:
    answer = app.simulate_get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == content_type
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.content == (UI_DIR / file).read_bytes()


def test_data_routes_keep_their_token(app: falcon.testing.TestClient) -> None:
    assert app.simulate_get("/query/services").status_code == 401


def test_etag_revalidation_and_gzip(app: falcon.testing.TestClient) -> None:
    first = app.simulate_get("/ui/app.js", headers={"Accept-Encoding": "gzip, br"})
    assert first.headers["content-encoding"] == "gzip"
    assert gzip.decompress(first.content) == (UI_DIR / "app.js").read_bytes()
    again = app.simulate_get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and not again.content and "content-type" not in again.headers


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/vendor/none.js"],
                         ids=["unknown", "dotdot", "escaped-dotdot", "vendor"])
def test_only_the_folder_s_files_are_served(app: falcon.testing.TestClient, path: str) -> None:
    answer = app.simulate_get(path)
    assert answer.status_code == 404
    assert answer.json["error"] == "not_found"


def test_a_missing_vendor_build_says_how_to_make_it(app: falcon.testing.TestClient) -> None:
    assert "make ui" in app.simulate_get("/ui/vendor/none.js").json["message"]


def test_config_tells_where_the_feed_is_and_whether_a_token_is_needed(app: falcon.testing.TestClient) -> None:
    answer = app.simulate_get("/ui/config.json")
    assert answer.json == {"error_stream": {"port": 3999, "path": "/ws/x", "origin_allowed": True},
                           "auth_required": True}
    assert client().simulate_get("/ui/config.json").json["auth_required"] is False


def test_config_checks_the_page_origin_against_the_bridge_allow_list() -> None:
    allowed = client(ERROR_STREAM_WS_ORIGINS="http://apm.example:3001")
    assert allowed.simulate_get("/ui/config.json", host="apm.example:3001").json["error_stream"]["origin_allowed"]
    assert not allowed.simulate_get("/ui/config.json", host="other:3001").json["error_stream"]["origin_allowed"]


def test_ui_files_lists_every_file_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "pages" / "a.js").write_text("x" * 2000)
    (tmp_path / ".hidden").write_text("no")
    files = ui_files(tmp_path)
    assert sorted(files) == ["index.html", "pages/a.js"]
    assert files["pages/a.js"].gzipped is not None and files["index.html"].gzipped is None
    assert ui_files(tmp_path / "absent") == {}
