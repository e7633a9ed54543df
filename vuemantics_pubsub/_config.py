"""Redis URL resolution and parsing (called by the C type at construction)."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_URL = "redis://localhost:6379/0"


def resolve_url(explicit: str | None) -> str:
    """The URL to use: the argument, else $REDIS_URL, else the host application's
    ``config.settings.redis_url``, else ``redis://localhost:6379/0``."""
    if explicit is not None:
        if not isinstance(explicit, str):
            raise TypeError(f"redis_url must be str or None, not {type(explicit).__name__}")
        return explicit
    env = os.environ.get("REDIS_URL")
    if env:
        return env
    try:
        from config import settings  # type: ignore[import-not-found]
    except Exception:
        settings = None
    url = getattr(settings, "redis_url", None) if settings is not None else None
    if url:
        return str(url)
    return DEFAULT_URL


def _fail(url_for_message: str, why: str) -> ValueError:
    return ValueError(f"invalid Redis URL {url_for_message!r}: {why}")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``; safe for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def parse_url(url: str) -> tuple[str | None, int, str | None, str | None, str | None, int]:
    """Parse ``url`` into ``(host, port, unix_path, username, password, db)``.

    Raises ValueError naming what is wrong, never echoing a password.
    """
    if not isinstance(url, str):
        raise TypeError(f"redis_url must be str, not {type(url).__name__}")
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _fail(shown, str(exc).split(":")[0]) from None
    scheme = parts.scheme.lower()
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    query = parse_qs(parts.query)
    db_text = query.get("db", [None])[0]
    if scheme == "redis":
        host = parts.hostname
        if not host:
            raise _fail(shown, "no host")
        path = parts.path.strip("/")
        if path and db_text is None:
            db_text = path
        elif path:
            raise _fail(shown, "database given twice")
        unix_path = None
        port = 6379 if port is None else port
        if port == 0:
            raise _fail(shown, "port 0")
    elif scheme == "unix":
        if parts.netloc.rsplit("@", 1)[-1]:
            raise _fail(shown, "unix:// takes a path, not a host (use unix:///path/to.sock)")
        unix_path = unquote(parts.path)
        if not unix_path:
            raise _fail(shown, "no socket path")
        host, port = None, 0
    elif scheme in ("rediss", "valkeys"):
        raise _fail(shown, "TLS (rediss://) is not supported by this build")
    else:
        raise _fail(shown, f"unsupported scheme {parts.scheme!r} (use redis:// or unix://)")
    db = 0
    if db_text not in (None, ""):
        try:
            db = int(db_text)
        except ValueError:
            raise _fail(shown, f"database {db_text!r} is not a number") from None
        if db < 0:
            raise _fail(shown, "negative database number")
    if username is not None and username and password is None:
        # redis://secret@host is redis-py's "password only" form
        username, password = None, username
    return host, port, unix_path, username or None, password, db
