"""Preparing a Unix socket path for a server: refuse a live one, replace a stale one."""

from __future__ import annotations

import contextlib
import socket
import stat
from pathlib import Path

from meshsec.agent.errors import SocketInUseError

MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL


def prepare_socket_path(path: Path) -> None:
    """Create the parent directory; remove a stale socket; raise if a server is listening."""
    if len(str(path).encode()) > MAX_UNIX_PATH:
        raise SocketInUseError(path, f"path is longer than {MAX_UNIX_PATH} bytes")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise SocketInUseError(path, "exists and is not a socket; refusing to replace it")
        if socket_is_live(path):
            raise SocketInUseError(path, "already in use by a running server")
        path.unlink()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SocketInUseError(path, f"cannot create directory: {exc.strerror}") from None


def socket_is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
