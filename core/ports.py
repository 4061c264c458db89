"""TCP ports on this machine: is one free, who holds it, and a free one for a test or a probe."""

from __future__ import annotations

import socket

import psutil


class PortTaken(RuntimeError):
    """A service cannot listen where it was asked to; the message names the holder and the fix."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_owner(port: int) -> str:
    """Best-effort description of who listens on ``port`` (for error messages)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3])[:120]})"
    except (psutil.Error, OSError):
        pass
    return "another process"


def require_free_port(host: str, port: int, what: str, fix: str) -> None:
    """Raise :class:`PortTaken` unless ``port`` on ``host`` is free; ``what`` names the service
    ("the scoring endpoint"), ``fix`` the setting that moves it."""
    if not port_is_free(host, port):
        raise PortTaken(f"cannot start {what}: port {port} on {host} is already taken by "
                        f"{port_owner(port)}. Stop that process, or {fix}.")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
