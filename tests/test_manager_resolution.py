"""Manager resolution (SPEC §2): the argument (an object or a zero-argument callable), else the
backend's core.websocket.manager.get_manager(), else the one set with set_manager()."""

from __future__ import annotations

import sys
import types

import pytest

from support import FakeWebSocket, unique, wait_for
from vuemantics_pubsub import ConnectionManager, UploadProgressPublisher, set_manager

pytestmark = pytest.mark.timeout(30)


async def deliver(publisher: UploadProgressPublisher, manager: ConnectionManager) -> FakeWebSocket:
    ws = FakeWebSocket()
    user, upload = unique("u"), unique("upload")
    await manager.connect(user, ws)
    await manager.subscribe_upload(user, upload)
    await publisher.start()
    await publisher.publish_progress(upload, "routed")
    await wait_for(lambda: ws.sent == ["routed"], timeout=5, what="the routed message")
    return ws


@pytest.fixture
def no_default_manager():
    yield
    set_manager(None)


@pytest.fixture
def fake_backend():
    """A stand-in for the backend's package layout: core.websocket.manager.get_manager()."""
    manager = ConnectionManager()
    names = ["core", "core.websocket", "core.websocket.manager"]
    saved = {n: sys.modules.get(n) for n in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["core.websocket.manager"].get_manager = lambda: manager  # type: ignore[attr-defined]
    try:
        yield manager
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


async def test_manager_factory_argument(make_publisher) -> None:
    manager = ConnectionManager()
    await deliver(make_publisher(manager=lambda: manager), manager)


async def test_set_manager_when_no_backend(make_publisher, no_default_manager) -> None:
    manager = ConnectionManager()
    set_manager(manager)
    await deliver(make_publisher(), manager)


async def test_backend_manager_wins_over_set_manager(make_publisher, fake_backend,
                                                     no_default_manager) -> None:
    set_manager(ConnectionManager())  # not this one: the backend's is found first
    await deliver(make_publisher(), fake_backend)


async def test_no_manager_at_all_warns_and_drops(make_publisher, redis_server, caplog,
                                                 no_default_manager) -> None:
    publisher = make_publisher()
    await publisher.start()
    await publisher.publish_progress("1", "nobody routes this")
    await wait_for(lambda: publisher.stats()["no_manager"] == 1, timeout=5, what="no_manager")
    assert any("No WebSocket manager" in r.getMessage() for r in caplog.records)
