"""The private redis-server fixture itself: loopback, free port, no persistence."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import redis


def test_server_answers_on_its_own_loopback_port(redis_server, redis_client: redis.Redis) -> None:
    """The fixture's URL points at a live server that is not the system's 6379."""
    parts = urlsplit(redis_server.url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == (
        "redis", "127.0.0.1", redis_server.port, "/0",
    )
    assert redis_server.port != 6379
    assert redis_client.ping() is True
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"


def test_server_is_private_and_ephemeral(redis_server, redis_client: redis.Redis) -> None:
    """Bound to 127.0.0.1 only, no RDB snapshots, no AOF, working in a temp dir."""
    assert redis_client.config_get("bind")["bind"] == "127.0.0.1"
    assert redis_client.config_get("save")["save"] == ""
    assert redis_client.config_get("appendonly")["appendonly"] == "no"
    assert redis_client.config_get("dir")["dir"] == str(redis_server.workdir.resolve())


def test_raw_client_round_trips_bytes(redis_client: redis.Redis) -> None:
    """The raw client publishes arbitrary bytes (used for invalid UTF-8 payloads)."""
    assert redis_client.publish("nobody-listens:fixture-check", b"\xff\xfe") == 0
