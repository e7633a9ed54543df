"""A WebSocket connection manager with the backend's interface, for standalone use.

The vuemantics backend has its own ``core.websocket.manager.ConnectionManager``;
this one has the same attributes and coroutine methods, so tests, demos and
applications without the backend can use the publisher unchanged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Protocol

__all__ = ["ConnectionManager", "WebSocketLike", "set_manager", "get_default_manager"]

logger = logging.getLogger("vuemantics_pubsub")


class WebSocketLike(Protocol):
    async def send_text(self, data: str) -> None: ...


class ConnectionManager:
    """Which WebSockets belong to which user, and which users follow which upload."""

    def __init__(self) -> None:
        self.user_connections: defaultdict[str, set[Any]] = defaultdict(set)
        self.upload_subscribers: defaultdict[str, set[str]] = defaultdict(set)
        self.user_subscriptions: defaultdict[str, set[str]] = defaultdict(set)

    async def connect(self, user_id: str, websocket: Any) -> None:
        """Register ``websocket`` as one of ``user_id``'s connections."""
        self.user_connections[user_id].add(websocket)

    async def disconnect(self, user_id: str, websocket: Any) -> None:
        """Forget ``websocket``; with the user's last socket gone, drop their subscriptions."""
        sockets = self.user_connections.get(user_id)
        if sockets is None:
            return
        sockets.discard(websocket)
        if not sockets:
            del self.user_connections[user_id]
            for upload_id in list(self.user_subscriptions.get(user_id, ())):
                await self.unsubscribe_upload(user_id, upload_id)

    async def subscribe_upload(self, user_id: str, upload_id: str) -> None:
        self.upload_subscribers[upload_id].add(user_id)
        self.user_subscriptions[user_id].add(upload_id)

    async def unsubscribe_upload(self, user_id: str, upload_id: str) -> None:
        subscribers = self.upload_subscribers.get(upload_id)
        if subscribers is not None:
            subscribers.discard(user_id)
            if not subscribers:
                del self.upload_subscribers[upload_id]
        uploads = self.user_subscriptions.get(user_id)
        if uploads is not None:
            uploads.discard(upload_id)
            if not uploads:
                del self.user_subscriptions[user_id]

    def get_upload_subscriber_ids(self, upload_id: str) -> set[str]:
        """A copy of the ids of the users subscribed to ``upload_id``."""
        return set(self.upload_subscribers.get(upload_id, ()))


_default_manager: Any = None


def set_manager(manager: Any) -> None:
    """Set the process-wide manager used by publishers created without ``manager=``
    when the backend's ``core.websocket.manager`` is not importable."""
    global _default_manager
    _default_manager = manager


def get_default_manager() -> Any:
    """The manager set with :func:`set_manager`, or ``None``."""
    return _default_manager
