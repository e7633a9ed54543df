"""Type stubs for the C extension `vuemantics_pubsub._native`."""

from typing import Any, Callable, Coroutine, Protocol


class _Model(Protocol):
    def model_dump_json(self) -> str: ...


Message = _Model | str | bytes


class UploadProgressPublisher:
    """Redis pub/sub -> WebSocket bridge; drop-in for the backend's class.

    All arguments are optional. ``redis_url`` may be given positionally, every
    other argument is keyword-only.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        manager: Any | Callable[[], Any] | None = None,
        start_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        publish_timeout: float = 2.0,
        send_timeout: float = 5.0,
        ping_interval: float = 5.0,
        ping_timeout: float = 2.0,
        backoff_min: float = 0.05,
        backoff_max: float = 0.8,
        max_message_bytes: int = 16 * 1024 * 1024,
        outbox_max_messages: int = 100_000,
        outbox_max_bytes: int = 64 * 1024 * 1024,
        queue_max_messages: int = 100_000,
        queue_max_bytes: int = 64 * 1024 * 1024,
    ) -> None: ...

    # Each returns a native coroutine-like awaitable that runs when awaited (so
    # asyncio.create_task(), asyncio.run() and gather() take it, as with the original).
    def start(self) -> Coroutine[Any, Any, None]: ...
    def stop(self) -> Coroutine[Any, Any, None]: ...
    def publish_progress(self, upload_id: object, message: Message, /) -> Coroutine[Any, Any, None]: ...
    def publish_to_user(self, user_id: object, message: Message, /) -> Coroutine[Any, Any, None]: ...
    def flush(self) -> Coroutine[Any, Any, None]: ...
    def stats(self) -> dict[str, Any]: ...

    @property
    def connected(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    @property
    def redis_url(self) -> str: ...
