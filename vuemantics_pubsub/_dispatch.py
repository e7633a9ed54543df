"""Routing of received messages to WebSockets (loop thread only).

The C drain callback hands each batch of ``(channel, payload)`` pairs, in arrival
order, to :meth:`Dispatcher.dispatch`. Routing is the original's (SPEC 1.1); the
corrections are that every WebSocket has its own ordered outlet, so one slow or
stuck socket never holds up the others, and a send that takes longer than
``send_timeout`` counts as failed and disconnects that socket.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections import deque
from typing import Any

from .manager import get_default_manager

logger = logging.getLogger("vuemantics_pubsub")

_EAGER = sys.version_info >= (3, 12)


_BACKEND_MODULE = "core.websocket.manager"
_backend_missing = False  # the import failed once: do not search sys.path on every batch


def _backend_manager() -> Any:
    """The backend's manager when ``core.websocket.manager`` is importable, else None."""
    global _backend_missing
    module = sys.modules.get(_BACKEND_MODULE)
    if module is None:
        if _backend_missing:
            return None
        try:
            module = importlib.import_module(_BACKEND_MODULE)
        except ImportError:
            _backend_missing = True
            return None
    return module.get_manager()


class _Outlet:
    """The backlog of one WebSocket and the task that sends it, in order."""

    __slots__ = ("ws", "user_id", "queue", "task", "since", "timed_out", "dead")

    def __init__(self, ws: Any, user_id: str) -> None:
        self.ws = ws
        self.user_id = user_id
        self.queue: deque[str] = deque()
        self.task: asyncio.Task[None] | None = None
        self.since = 0.0
        self.timed_out = False
        self.dead = False


class Dispatcher:
    """Routes payloads to the sockets of a manager; one per publisher."""

    def __init__(self, manager: Any, send_timeout: float) -> None:
        self._manager_arg = manager
        self._manager_is_factory = (
            manager is not None and callable(manager) and not hasattr(manager, "user_connections")
        )
        self.send_timeout = send_timeout
        self._outlets: dict[Any, _Outlet] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned_no_manager = False
        self.delivered = 0
        self.ignored = 0
        self.send_failed = 0
        self.send_timeouts = 0
        self.no_manager = 0

    # -- manager resolution ---------------------------------------------------

    def manager(self) -> Any:
        """The manager to route with: the argument, the backend's, or set_manager()'s."""
        if self._manager_arg is not None:
            return self._manager_arg() if self._manager_is_factory else self._manager_arg
        found = _backend_manager()
        if found is None:
            found = get_default_manager()
        return found

    # -- routing ----------------------------------------------------------------

    def dispatch(self, batch: list[tuple[str, str]]) -> None:
        """Route every ``(channel, payload)`` of ``batch`` in order; never raises."""
        try:
            manager = self.manager()
        except Exception as exc:
            manager = None
            if not self._warned_no_manager:
                logger.warning("No WebSocket manager available: %s", exc)
                self._warned_no_manager = True
        if manager is None:
            self.no_manager += len(batch)
            if not self._warned_no_manager:
                logger.warning(
                    "No WebSocket manager: pass manager= or call vuemantics_pubsub.set_manager();"
                    " received messages are dropped"
                )
                self._warned_no_manager = True
            return
        connections = manager.user_connections
        started: list[_Outlet] = []
        for channel, payload in batch:
            try:
                if channel.startswith("upload:"):
                    user_ids: Any = manager.get_upload_subscriber_ids(channel[7:])
                elif channel.startswith("user:"):
                    user_ids = (channel[5:],)
                else:
                    self.ignored += 1
                    continue
                for user_id in user_ids:
                    sockets = connections.get(user_id)
                    if not sockets:
                        continue
                    for ws in tuple(sockets):
                        self._enqueue(user_id, ws, payload, started)
            except Exception:
                logger.exception("Error routing message on channel %r", channel)
        # Start the new outlets only now, so that a socket that got several messages of this
        # batch sends them all from one task.
        for outlet in started:
            self._start(outlet)

    def _enqueue(self, user_id: str, ws: Any, payload: str, started: list[_Outlet]) -> None:
        outlet = self._outlets.get(ws)
        if outlet is None:
            outlet = self._outlets[ws] = _Outlet(ws, user_id)
            started.append(outlet)
        if not outlet.dead:
            outlet.queue.append(payload)

    def _start(self, outlet: _Outlet) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        outlet.since = loop.time()
        if _EAGER:
            # runs at once, inside its task, up to the first real suspension: a send that
            # completes without waiting costs no scheduling round
            task = asyncio.Task(self._run_outlet(outlet), loop=loop, eager_start=True)  # type: ignore[call-arg]
        else:
            task = asyncio.Task(self._run_outlet(outlet), loop=loop)
        if not task.done():
            outlet.task = task
            if self._watchdog is None:
                self._arm_watchdog(loop)

    async def _run_outlet(self, outlet: _Outlet) -> None:
        """Send the socket's backlog in order; a failure or a timeout disconnects it."""
        ws, queue = outlet.ws, outlet.queue
        send = ws.send_text
        try:
            await send(queue.popleft())  # outlet.since was set when it started
            self.delivered += 1
            if queue:
                clock = self._loop.time  # type: ignore[union-attr]
                while queue:
                    payload = queue.popleft()
                    outlet.since = clock()
                    await send(payload)
                    self.delivered += 1
        except asyncio.CancelledError:
            if not outlet.timed_out:
                raise
            self.send_timeouts += 1
            logger.warning(
                "WebSocket of user %s did not accept a message within %.3g s; disconnecting it",
                outlet.user_id, self.send_timeout,
            )
            await self._drop(outlet)
        except Exception as exc:
            self.send_failed += 1
            logger.debug("Failed to forward message to user %s: %s", outlet.user_id, exc)
            await self._drop(outlet)
        finally:
            if self._outlets.get(ws) is outlet:
                del self._outlets[ws]

    async def _drop(self, outlet: _Outlet) -> None:
        outlet.dead = True
        outlet.queue.clear()
        try:
            manager = self.manager()
            if manager is not None:
                result = manager.disconnect(outlet.user_id, outlet.ws)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
        except Exception:
            logger.exception("Error disconnecting a WebSocket of user %s", outlet.user_id)

    # -- send timeouts ----------------------------------------------------------

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = loop.call_later(max(self.send_timeout / 4, 0.005), self._check_stuck)

    def _check_stuck(self) -> None:
        """Cancel the send of every outlet stuck longer than send_timeout; re-arm while busy."""
        self._watchdog = None
        loop = self._loop
        if loop is None or not self._outlets:
            return
        deadline = loop.time() - self.send_timeout
        for outlet in list(self._outlets.values()):
            task = outlet.task
            if (
                task is not None and not task.done() and not outlet.dead
                and outlet.since and outlet.since <= deadline
            ):
                outlet.timed_out = True
                task.cancel()
        if self._outlets:
            self._arm_watchdog(loop)

    # -- shutdown -----------------------------------------------------------------

    def close(self) -> None:
        """Cancel every outlet still sending and the watchdog."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for outlet in list(self._outlets.values()):
            outlet.queue.clear()
            if outlet.task is not None and not outlet.task.done():
                outlet.task.cancel()
        self._outlets.clear()

    def counters(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "ignored": self.ignored,
            "send_failed": self.send_failed,
            "send_timeouts": self.send_timeouts,
            "no_manager": self.no_manager,
        }


def make_dispatcher(manager: Any, send_timeout: float) -> Dispatcher:
    """Factory called by the C type."""
    return Dispatcher(manager, send_timeout)

