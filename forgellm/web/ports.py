"""Port checks shared by ``forgellm web`` and ``forgellm start``."""

from __future__ import annotations

import socket
import time

from forgellm.errors import UserError


def ensure_free(host: str, port: int, flag: str) -> None:
    """Refuse a port something already listens on, naming the port and the flag to change it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind: connections of a previous process lingering in
        # TIME_WAIT do not count (a restarted web app must get its port back), a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"port {port} on {host} is in use ({exc.strerror}); "
                f"stop what uses it or pick another port with {flag} PORT"
            ) from None


def wait_listening(host: str, port: int, timeout: float) -> bool:
    """True once something accepts connections on host:port, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
