"""Which worker of a distributed run died: every rank holds one TCP connection to rank 0.

The engines' collectives fail when a peer goes away ("connection closed by peer") but do not
say which rank it was. The kernel closes a dead process's sockets even after ``kill -9``, so
rank 0 sees end-of-file on that rank's connection and can name it in the ``error`` event. A
worker that finishes normally says ``bye`` first (`finish_watch`), which is not a loss.

Address: ``FORGELLM_WATCH_ADDR=host:port`` when set; otherwise next to the engine's own
rendezvous: torch ``MASTER_ADDR:MASTER_PORT+1``, mlx ring rank 0's first ``ip:port - 1``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forgellm.training.distributed import Group

log = logging.getLogger(__name__)

CONNECT_SECONDS = 60.0
BYE = b"bye\n"

_lost: list[int] = []
_lost_event = threading.Event()
_sockets: list[socket.socket] = []
_finished = threading.Event()
_loss_callbacks: list[Callable[[], None]] = []


def watch_address(engine: str) -> tuple[str, int] | None:
    explicit = os.environ.get("FORGELLM_WATCH_ADDR")
    if explicit:
        host, _, port = explicit.rpartition(":")
        return host, int(port)
    if engine == "torch" and "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]) + 1
    hostfile = os.environ.get("MLX_HOSTFILE")
    if engine == "mlx" and hostfile and Path(hostfile).is_file():
        try:
            host, _, port = json.loads(Path(hostfile).read_text())[0][0].rpartition(":")
            return host, int(port) - 1
        except (ValueError, IndexError, KeyError, TypeError):
            return None
    return None


def start_watch(group: Group) -> None:
    """Connect every rank to rank 0 (a collective: all ranks call it)."""
    address = watch_address(group.engine)
    server = None
    if group.is_main and address is not None:
        try:
            server = socket.create_server(("", address[1]), backlog=group.world_size)
        except OSError as exc:
            log.warning("no liveness watch (port %d: %s); a lost worker will not be named", address[1], exc)
    if group.sum([1.0 if server is not None else 0.0])[0] == 0:  # everyone agrees, and rank 0 listens
        return
    assert address is not None
    if group.is_main:
        threading.Thread(target=_serve, args=(server, group.world_size - 1), daemon=True, name="forgellm-watch").start()
    else:
        conn = _connect(address)
        conn.sendall(f"{group.rank}\n".encode())
        _sockets.append(conn)
        threading.Thread(target=_follow, args=(conn, 0), daemon=True, name="forgellm-watch").start()


def _connect(address: tuple[str, int]) -> socket.socket:
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            return socket.create_connection(address, timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _serve(server: socket.socket, peers: int) -> None:
    with server:
        for _ in range(peers):
            conn, _ = server.accept()
            rank = int(conn.makefile("rb").readline() or b"-1")
            _sockets.append(conn)
            threading.Thread(target=_follow, args=(conn, rank), daemon=True, name=f"forgellm-watch-{rank}").start()


def _follow(conn: socket.socket, rank: int) -> None:
    """Block until the peer closes; without its ``bye`` that is a lost worker."""
    conn.settimeout(None)
    received = b""
    try:
        while chunk := conn.recv(64):
            received += chunk
    except OSError:
        pass
    if BYE not in received and not _finished.is_set():
        log.error("worker rank %d closed its connection without finishing", rank)
        _lost.append(rank)
        _lost_event.set()
        for callback in list(_loss_callbacks):
            callback()


def on_loss(callback: Callable[[], None]) -> None:
    """Call ``callback`` (in the watch's thread) each time a worker is seen dying."""
    _loss_callbacks.append(callback)


def lost_ranks(wait: float = 0.0) -> list[int]:
    """Ranks seen dying; waits up to ``wait`` seconds for the first (a collective fails fast, EOF may lag)."""
    _lost_event.wait(wait)
    return sorted(set(_lost))


def finish_watch() -> None:
    """This worker ends normally: tell rank 0 so its exit is not a loss."""
    _finished.set()
    for conn in _sockets:
        try:
            conn.sendall(BYE)
        except OSError:
            pass
