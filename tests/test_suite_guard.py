"""The test suite itself may only reach this machine (see the ``_loopback_only`` fixture)."""

from __future__ import annotations

import socket

import pytest


def test_a_connection_to_another_machine_is_refused_before_any_packet_leaves() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(OSError, match="loopback"):
        sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed, and never tried


def test_loopback_connections_still_work() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
