"""The one place that turns "cannot listen" into the start-up error naming the variable that chose the port.

Each server (the engine's metrics, the query API, the bridge) calls ``check_port`` before it binds: a port
already in use stops start-up with one line and exit code 2 (``panopticon.cli``), never a traceback or a server's
retry loop.
"""

from __future__ import annotations

import errno
import socket

from panopticon.common.settings import SettingsError


def check_port(host: str, port: int, variable: str) -> None:
    """Raise SettingsError naming ``variable`` unless this process could listen on host:port now."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SettingsError(variable, f"port {port} is already in use on {host} "
                                          "(another process listens there)") from None
        raise SettingsError(variable, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
