"""vuemantics-pubsub: a native Redis pub/sub -> WebSocket bridge.

Drop-in for the vuemantics backend's ``core/websocket/publisher.py``::

    from vuemantics_pubsub import UploadProgressPublisher, init_publisher, get_publisher
"""

from __future__ import annotations

from typing import Any

from ._native import UploadProgressPublisher
from .manager import ConnectionManager, set_manager

__all__ = [
    "UploadProgressPublisher",
    "init_publisher",
    "get_publisher",
    "ConnectionManager",
    "set_manager",
]

__version__ = "0.1.0"

_publisher: UploadProgressPublisher | None = None


def init_publisher(*args: Any, **kwargs: Any) -> UploadProgressPublisher:
    """Create the process-wide publisher (arguments as for UploadProgressPublisher)."""
    global _publisher
    _publisher = UploadProgressPublisher(*args, **kwargs)
    return _publisher


def get_publisher() -> UploadProgressPublisher:
    """The publisher made by :func:`init_publisher`."""
    if _publisher is None:
        raise RuntimeError("UploadProgressPublisher not initialized. Call init_publisher()")
    return _publisher
