"""``panopticon api``: serve the query API with gunicorn (``api.app:get_app`` in each worker; the launch and
the metrics directory are ``common.serving``'s)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from panopticon.common.serving import Component, serve

API = Component("api", "panopticon.api.main", "PORT", "API_WORKERS", "API_THREADS")
add_arguments = API.add_arguments
run = API.launch


def serve_api(args: argparse.Namespace) -> int:
    from panopticon.common.logs import setup_logging
    from panopticon.common.settings import load_settings

    settings = load_settings()
    setup_logging(settings, "api")

    def load() -> Any:
        from panopticon.api.app import get_app

        return get_app(settings)

    return serve(API.options(settings, args, timeout=int(max(30.0, settings.opensearch_timeout_s * 3 + 5))), load)


def main(argv: list[str] | None = None) -> int:
    return API.main(argv, serve_api)


if __name__ == "__main__":
    sys.exit(main())
