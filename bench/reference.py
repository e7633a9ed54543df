"""Pure-Python reference of the backend's original ``UploadProgressPublisher`` (SPEC 1.1).

Written in this project for benchmarking only: it behaves like the class the package
replaces so that the native publisher can be measured against it in the same run.

- redis-py's asyncio client with the hiredis parser, one ``ConnectionPool`` of 50
  connections (the backend's default) shared by PUBLISH and by the pub/sub listener;
- ``start()`` creates the listener task and returns without waiting for PSUBSCRIBE;
- the listener polls ``get_message(timeout=0.1)``, decodes channel and payload to ``str``
  and routes through the manager with sequential ``await ws.send_text``; sockets whose
  send raised are removed after the loop with ``await manager.disconnect``;
- any error in the loop is logged and the loop sleeps 1 s; a failed PSUBSCRIBE ends it;
- ``stop()`` cancels the listener and waits at most 2 s;
- ``publish_*`` PUBLISH ``message.model_dump_json()`` (a ``str``/``bytes`` message is sent
  as is, for benchmarking); Redis errors such as the pool's "Too many connections" are
  logged and swallowed, so the message is lost.

Deliberate differences, none on the measured paths: the URL and the manager are
constructor arguments (the original reads the backend's settings and ``get_manager()``),
``publish_errors`` counts swallowed errors, and ``close()`` releases the pool at the end
of a benchmark run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

__all__ = ["ReferencePublisher", "POOL_MAX_CONNECTIONS"]

logger = logging.getLogger("bench.reference")

POOL_MAX_CONNECTIONS = 50
POLL_TIMEOUT = 0.1
ERROR_PAUSE = 1.0
STOP_TIMEOUT = 2.0


def _text(value: Any) -> str:
    """``value`` as ``str`` (redis-py hands out ``bytes`` without decode_responses)."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ReferencePublisher:
    """The original publisher's behaviour, on redis-py asyncio + hiredis."""

    def __init__(self, redis_url: str, manager: Any) -> None:
        if not HIREDIS_AVAILABLE:
            raise RuntimeError("the reference needs the hiredis parser: pip install hiredis")
        self._pool = aioredis.ConnectionPool.from_url(
            redis_url, max_connections=POOL_MAX_CONNECTIONS
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._manager = manager
        self._listener_task: asyncio.Task[None] | None = None
        self._running = False
        self.publish_errors = 0
        self.last_publish_error = ""

    @property
    def parser_name(self) -> str:
        """Name of the response parser class the pool's connections use."""
        return self._pool.connection_kwargs.get(
            "parser_class", aioredis.connection.DefaultParser
        ).__name__

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the listener task; returns at once (the subscription is not awaited)."""
        if self._running:
            return
        self._running = True
        self._listener_task = asyncio.create_task(self._listen_redis())
        logger.info("UploadProgressPublisher started")

    async def stop(self) -> None:
        """Cancel the listener and wait for it at most 2 s; never raises."""
        self._running = False
        if self._listener_task is not None:
            self._listener_task.cancel()
            try:
                await asyncio.wait_for(self._listener_task, timeout=STOP_TIMEOUT)
            except asyncio.CancelledError:
                pass
            except TimeoutError:
                logger.warning("Redis listener task did not stop within timeout")
            except Exception as exc:
                logger.error("Error stopping Redis listener: %s", exc)
        logger.info("UploadProgressPublisher stopped")

    async def close(self) -> None:
        """Benchmark only: release the pool's connections."""
        await self._redis.aclose()
        await self._pool.disconnect()

    # -- publishing -------------------------------------------------------------------

    async def publish_progress(self, upload_id: Any, message: Any) -> None:
        """PUBLISH ``message`` on ``upload:{upload_id}``; Redis errors are logged and lost."""
        await self._publish(f"upload:{upload_id}", message)

    async def publish_to_user(self, user_id: Any, message: Any) -> None:
        """PUBLISH ``message`` on ``user:{user_id}``; Redis errors are logged and lost."""
        await self._publish(f"user:{user_id}", message)

    async def _publish(self, channel: str, message: Any) -> None:
        # serialising is outside the try, as in the original: a bad message raises
        if isinstance(message, (str, bytes)):
            payload = message
        else:
            payload = message.model_dump_json()
        try:
            await self._redis.publish(channel, payload)
            # the original formats an f-string debug line on every publish
            logger.debug(f"Published message on {channel}")
        except Exception as exc:
            self.publish_errors += 1
            self.last_publish_error = str(exc)
            logger.error(f"Failed to publish to Redis: {exc}")

    # -- listening --------------------------------------------------------------------

    async def _listen_redis(self) -> None:
        pubsub = None
        try:
            pubsub = self._redis.pubsub()
            await pubsub.psubscribe("upload:*", "user:*")
            logger.info("Redis listener started (patterns: upload:*, user:*)")
            while self._running:
                try:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=POLL_TIMEOUT
                    )
                    if message is None or message["type"] != "pmessage":
                        continue
                    await self._forward(_text(message["channel"]), _text(message["data"]))
                except Exception as exc:
                    logger.error(f"Error in Redis listener: {exc}")
                    await asyncio.sleep(ERROR_PAUSE)
        except asyncio.CancelledError:
            logger.info("Redis listener cancelled")
        except Exception as exc:
            logger.error(f"Redis listener failed: {exc}")
        finally:
            if pubsub is not None:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def _forward(self, channel: str, payload: str) -> None:
        """Route one message to the local WebSockets, one send after another."""
        manager = self._manager
        if channel.startswith("upload:"):
            user_ids = manager.get_upload_subscriber_ids(channel[len("upload:"):])
        elif channel.startswith("user:"):
            user_ids = {channel[len("user:"):]}
        else:
            return
        for user_id in user_ids:
            dead = []
            for ws in manager.user_connections.get(user_id, set()):
                try:
                    await ws.send_text(payload)
                except Exception:
                    dead.append(ws)
            for ws in dead:
                await manager.disconnect(user_id, ws)
