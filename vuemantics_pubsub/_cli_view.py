"""What the CLI shows of received messages: payload parsing, a tap manager that receives
every message, and two views (a live terminal view and plain lines). Loop thread only.

Payloads are read defensively: the backend's shapes (``upload_progress``,
``upload_completed``, ``upload_failed``) are rendered by field, anything else as text,
and control characters are escaped so a payload can never drive the terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["Event", "parse", "TapManager", "PlainView", "LiveView", "make_view", "ViewLogHandler"]

logger = logging.getLogger("vuemantics_pubsub")

FINISHED = ("completed", "failed")


def clean(value: object, limit: int = 200) -> str:
    """``value`` as one printable line of at most ``limit`` characters (controls escaped)."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                       for c in text)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


@dataclass
class Event:
    """One received message, as the views need it.

    ``kind``: ``progress``, ``completed``, ``failed`` (the backend's messages) or ``text``
    (anything else: other JSON, or a payload that is not JSON at all, then ``raw`` is true).
    """

    channel: str            # "upload" or "user"
    target: str             # the upload id or the user id
    kind: str
    stage: str = ""
    percent: int | None = None
    text: str = ""
    error: str = ""
    score: object = None
    raw: bool = False
    data: dict[str, Any] | None = None

    def describe(self) -> str:
        """The event as one line of text (no time, no channel)."""
        if self.kind == "progress":
            pct = "  ?%" if self.percent is None else f"{self.percent:3d}%"
            line = f"{self.stage} {pct} {clean(self.text)}".rstrip()
            return f"{line} (error: {clean(self.error)})" if self.error else line
        if self.kind == "completed":
            score = "" if self.score is None else f" audit_score={clean(self.score, 20)}"
            text = f' description="{clean(self.text, 80)}"' if self.text else ""
            return f"COMPLETED{score}{text}"
        if self.kind == "failed":
            return f"FAILED error=\"{clean(self.error, 160)}\""
        return ("raw: " if self.raw else "") + clean(self.text, 300)


def _percent(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return max(0, min(100, int(value)))


def _text(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def parse(channel: str, target: str, payload: str) -> Event:
    """The :class:`Event` for ``payload`` received on ``{channel}:{target}``; never raises."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return Event(channel, target, "text", text=payload, raw=True)
    if not isinstance(data, dict):
        return Event(channel, target, "text", text=payload)
    try:
        return _parse_object(channel, target, payload, data)
    except Exception:  # a shape nobody planned for: show it as it came
        return Event(channel, target, "text", text=payload)


def _parse_object(channel: str, target: str, payload: str, data: dict[str, Any]) -> Event:
    action = data.get("action")
    if action == "upload_progress":
        body = data.get("payload")
        if not isinstance(body, dict):
            body = data
        stage = clean(_text(body.get("stage")) or "?", 40)
        return Event(channel, target, "progress", stage=stage,
                     percent=_percent(body.get("progress_percent")),
                     text=_text(body.get("message")), error=_text(body.get("error_message")),
                     data=data)
    if action == "upload_completed":
        return Event(channel, target, "completed", stage="completed", percent=100,
                     text=_text(data.get("description")), score=data.get("audit_score"), data=data)
    if action == "upload_failed":
        return Event(channel, target, "failed", stage="failed",
                     error=_text(data.get("error_message")) or "unknown error", data=data)
    message = data.get("message")
    if isinstance(message, str):
        text = f"{action}: {message}" if isinstance(action, str) and action else message
    else:
        text = payload
    return Event(channel, target, "text", text=text, data=data)


# -- the tap: a manager that hands every message to one sink -------------------------------

Sink = Callable[[str, str, str], None]


class _TapSocket:
    """Stands in for a WebSocket; every ``send_text`` goes to the sink with its channel."""

    __slots__ = ("channel", "target", "sink")

    def __init__(self, channel: str, target: str, sink: Sink) -> None:
        self.channel = channel
        self.target = target
        self.sink = sink

    async def send_text(self, data: str) -> None:
        try:
            self.sink(self.channel, self.target, data)
        except Exception:
            logger.exception("Error rendering a message on %s:%s", self.channel, self.target)


class _EveryUser:
    """``user_connections`` of the tap: every user id (and every upload key) has one socket."""

    def __init__(self, tap: TapManager) -> None:
        self._tap = tap

    def get(self, user_id: Any, default: Any = None) -> tuple[_TapSocket]:
        return (self._tap.socket(user_id),)

    def __getitem__(self, user_id: Any) -> tuple[_TapSocket]:
        return self.get(user_id)

    def __contains__(self, user_id: object) -> bool:
        return True


class TapManager:
    """A manager with the backend's interface whose single watcher follows every upload and
    every user: the publisher routes each received message to a socket that calls
    ``sink(channel, target, payload)`` with channel ``"upload"`` or ``"user"``.

    One socket per upload / user keeps their messages in order; the most recent
    ``max_sockets`` are kept.
    """

    def __init__(self, sink: Sink, max_sockets: int = 4096) -> None:
        self.sink = sink
        self.max_sockets = max_sockets
        self.user_connections = _EveryUser(self)
        self.upload_subscribers: dict[str, set[str]] = {}
        self._sockets: OrderedDict[Any, _TapSocket] = OrderedDict()

    def socket(self, key: Any) -> _TapSocket:
        """The socket for ``key``: ``("upload", id)`` for uploads, a user id str for users."""
        sock = self._sockets.get(key)
        if sock is None:
            if isinstance(key, tuple):
                sock = _TapSocket(key[0], key[1], self.sink)
            else:
                sock = _TapSocket("user", str(key), self.sink)
            self._sockets[key] = sock
            if len(self._sockets) > self.max_sockets:
                self._sockets.popitem(last=False)
        else:
            self._sockets.move_to_end(key)
        return sock

    def get_upload_subscriber_ids(self, upload_id: str) -> tuple[tuple[str, str]]:
        return (("upload", upload_id),)

    async def connect(self, user_id: str, websocket: Any) -> None:
        return None

    async def disconnect(self, user_id: str, websocket: Any) -> None:
        return None

    async def subscribe_upload(self, user_id: str, upload_id: str) -> None:
        return None

    async def unsubscribe_upload(self, user_id: str, upload_id: str) -> None:
        return None


# -- views ---------------------------------------------------------------------------------


def _clock() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


class PlainView:
    """One line per message (for pipes and logs)::

        12:00:01.234 upload 42 vision_analysis  30% Analyzing frames
        12:00:02.002 upload 42 COMPLETED audit_score=87 description="A cat"
        12:00:02.010 user alice notification: All done
    """

    live = False
    title = ""

    def __init__(self, out: TextIO, on_broken_pipe: Callable[[], None] | None = None) -> None:
        self.out = out
        self.on_broken_pipe = on_broken_pipe
        self.broken = False
        self.messages = 0
        self._flush_scheduled = False

    def feed(self, channel: str, target: str, payload: str) -> None:
        """Sink for :class:`TapManager`."""
        self.show(parse(channel, target, payload))

    def show(self, event: Event) -> None:
        self.messages += 1
        self._write(f"{_clock()} {event.channel} {clean(event.target, 120)} {event.describe()}\n")

    def log(self, text: str) -> None:
        self._write(f"{_clock()} {clean(text, 500)}\n")

    def set_connected(self, connected: bool) -> None:
        """Connection changes: a line on stderr (stdout is one line per message)."""
        text = "Redis connection back; listening" if connected else \
            "Redis connection lost; reconnecting"
        print(f"{_clock()} {text}", file=sys.stderr, flush=True)

    def _write(self, line: str) -> None:
        if self.broken:
            return
        try:
            self.out.write(line)
        except BrokenPipeError:
            self._broke()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.broken:
            return
        try:
            self.out.flush()
        except BrokenPipeError:
            self._broke()

    def refresh(self) -> None:
        """Nothing to redraw in plain lines."""

    def _broke(self) -> None:
        self.broken = True
        if self.on_broken_pipe is not None:
            self.on_broken_pipe()

    def close(self) -> None:
        self._flush()


@dataclass
class _Upload:
    upload_id: str
    stage: str = "queued"
    percent: int = 0
    text: str = ""
    state: str = "active"   # active, completed, failed
    updated: float = 0.0
    finished: float = 0.0


class LiveView:
    """The terminal view: one progress bar per upload (the most recently finished, then
    the active ones at the bottom), log lines scrolling above them, a footer with totals.

    Redraws at most ``fps`` times a second, and only when something changed. Remembers at
    most ``MAX_UPLOADS`` uploads (the oldest finished ones are forgotten first).
    """

    live = True
    MAX_UPLOADS = 1000

    def __init__(self, out: TextIO, title: str = "", fps: float = 12.0) -> None:
        self.out = out
        self.title = title
        self.interval = 1.0 / fps
        encoding = (getattr(out, "encoding", None) or "ascii").lower().replace("-", "")
        self.fancy = encoding.startswith("utf")
        self.color = not _no_color()
        self.uploads: dict[str, _Upload] = {}
        self.completed = 0
        self.failed = 0
        self.messages = 0
        self.user_messages = 0
        self.connected = True
        self.started = time.monotonic()
        self._logs: list[str] = []
        self._drawn = 0
        self._handle: Any = None
        self._closed = False
        self._shown = False

    # -- input -----------------------------------------------------------------

    def feed(self, channel: str, target: str, payload: str) -> None:
        """Sink for :class:`TapManager`."""
        self.show(parse(channel, target, payload))

    def show(self, event: Event) -> None:
        self.messages += 1
        if event.channel == "user":
            self.user_messages += 1
            self.log(f"user {clean(event.target, 60)}: {event.describe()}")
            return
        if event.kind == "text":
            self.log(f"upload {clean(event.target, 60)}: {event.describe()}")
            return
        now = time.monotonic()
        upload = self.uploads.get(event.target)
        if upload is None:
            upload = self.uploads[event.target] = _Upload(event.target, updated=now)
            if len(self.uploads) > self.MAX_UPLOADS:
                self._forget_one()
        upload.updated = now
        if event.stage:
            upload.stage = event.stage
        if event.percent is not None:
            upload.percent = event.percent
        if event.kind == "progress":
            upload.text = event.text or upload.text
        state = "active"
        if event.kind == "failed" or event.stage == "failed":
            state = "failed"
            upload.text = event.error or event.text or upload.text
        elif event.kind == "completed" or event.stage == "completed":
            state = "completed"
            if event.kind == "completed":
                upload.text = event.text or upload.text
                upload.percent = 100
        if state != upload.state and upload.state == "active":
            upload.finished = now
            if state == "completed":
                self.completed += 1
            else:
                self.failed += 1
            upload.state = state
        if event.kind in FINISHED:
            self.log(f"upload {clean(event.target, 60)} {event.describe()}")
        self._touch()

    def _forget_one(self) -> None:
        """Drop the upload finished longest ago, else the one updated longest ago."""
        finished = [u for u in self.uploads.values() if u.state != "active"]
        if finished:
            oldest = min(finished, key=lambda u: u.finished)
        else:
            oldest = min(self.uploads.values(), key=lambda u: u.updated)
        del self.uploads[oldest.upload_id]

    def log(self, text: str) -> None:
        """A line that scrolls above the bars."""
        self._logs.append(f"{_clock()} {clean(text, 1000)}")
        self._touch()

    def set_connected(self, connected: bool) -> None:
        """Connection changes: a log line, and a mark in the title while it is down."""
        self.connected = connected
        self.log("Redis connection back; listening" if connected
                 else "Redis connection lost; reconnecting")

    # -- drawing -----------------------------------------------------------------

    def _touch(self) -> None:
        if self._handle is None and not self._closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.refresh()
                return
            self._handle = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._handle = None
        self.refresh()

    def refresh(self) -> None:
        """Redraw now."""
        size = shutil.get_terminal_size((100, 24))
        width = max(size.columns - 1, 20)
        block = self._block(width, max(size.lines - 1, 3))
        parts = []
        if not self._shown:
            self._shown = True
            parts.append("\x1b[?25l")  # hide the cursor while drawing
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F\x1b[J")
        for line in self._logs:
            parts.append(line + "\n")
        self._logs.clear()
        for line in block:
            parts.append(line + "\x1b[K\n")
        self._drawn = len(block)
        self._write("".join(parts))

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _bar(self, percent: int, size: int) -> str:
        filled = round(size * percent / 100)
        full, empty = ("█", "░") if self.fancy else ("#", "-")
        return full * filled + empty * (size - filled)

    def _row(self, upload: _Upload, id_width: int, width: int) -> str:
        marks = {"active": ("▸", "36"), "completed": ("✔", "32"), "failed": ("✖", "31")}
        ascii_marks = {"active": ">", "completed": "+", "failed": "x"}
        mark, code = marks[upload.state]
        if not self.fancy:
            mark = ascii_marks[upload.state]
        bar_size = 20 if width >= 90 else 10
        ident = clean(upload.upload_id, id_width).ljust(id_width)
        head = f"{mark} {ident} [{self._bar(upload.percent, bar_size)}] {upload.percent:3d}% "
        stage = f"{upload.stage:<20} "
        room = width - len(head) - len(stage)
        text = clean(upload.text, max(room, 0)) if room > 0 else ""
        if room < 0:
            stage = ""
            text = ""
            head = head[:width]
        return self._paint(head, code) + stage + text

    def _block(self, width: int, height: int) -> list[str]:
        """The lines of the live block: title, bars, footer; at most ``height`` lines, none
        wider than ``width`` (so moving the cursor back up over them is exact)."""
        uploads = list(self.uploads.values())
        active = [u for u in uploads if u.state == "active"]
        done = sorted((u for u in uploads if u.state != "active"), key=lambda u: u.finished)
        rows = max(height - 2, 1)  # minus title and footer
        if len(uploads) > rows:
            rows = max(rows - 1, 1)  # and the "... more" line
        shown_active = active[:rows]
        room = rows - len(shown_active)
        shown_done = done[max(len(done) - room, 0):] if room > 0 else []
        hidden_done = len(done) - len(shown_done)
        hidden_active = len(active) - len(shown_active)
        id_width = max([8] + [len(u.upload_id) for u in shown_active + shown_done])
        id_width = min(id_width, max(width // 3, 8))

        state = "" if self.connected else "  (Redis unreachable, reconnecting)"
        title = clean(self.title or "vuemantics-pubsub watch", max(width - len(state), 1))
        lines = [self._paint(title, "1") + self._paint(state, "33") if state
                 else self._paint(title, "1")]
        if hidden_done or hidden_active:
            more = []
            if hidden_done:
                more.append(f"{hidden_done} earlier finished")
            if hidden_active:
                more.append(f"{hidden_active} more active")
            lines.append(clean("  ... " + ", ".join(more), width))
        for upload in shown_done + shown_active:
            lines.append(self._row(upload, id_width, width))
        elapsed = time.monotonic() - self.started
        footer = (f"uploads: {len(active)} active, {self.completed} completed, {self.failed} failed"
                  f" | messages: {self.messages} ({self.user_messages} to users) | {elapsed:.0f} s")
        lines.append(self._paint(clean(footer, width), "2"))
        return lines

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (BrokenPipeError, OSError):
            self._closed = True

    def close(self) -> None:
        """Final redraw; the bars stay on screen and the cursor comes back."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._shown and not self._closed:
            self.refresh()
            self._write("\x1b[?25h")
        self._closed = True


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def make_view(out: TextIO | None = None, title: str = "",
              on_broken_pipe: Callable[[], None] | None = None,
              plain: bool = False) -> PlainView | LiveView:
    """A :class:`LiveView` when ``out`` is a terminal (and not ``plain``), else a
    :class:`PlainView`."""
    out = sys.stdout if out is None else out
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and not plain and os.environ.get("TERM") != "dumb":
        return LiveView(out, title=title)
    return PlainView(out, on_broken_pipe=on_broken_pipe)



class ViewLogHandler(logging.Handler):
    """Routes the package's log records into a view as log lines (keeps the screen intact)."""

    def __init__(self, view: PlainView | LiveView) -> None:
        super().__init__()
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.view.log(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:
            self.handleError(record)
