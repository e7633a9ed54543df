"""Shutdown and processes: exit without stop(), the event loop closed first, stop() racing
incoming traffic, os.fork(), and use from a foreign event loop (SPEC §4, issue 3).

Everything that could hang or crash the interpreter runs in a fresh subprocess with a hard
timeout (``run_python``); the assertions are what a user sees: exit status 0, no traceback
on stderr, the call returned in time, the clear error.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading

import pytest

from support import connect_user, run_python, unique, wait_for, wait_for_sent

pytestmark = pytest.mark.timeout(60)

# Shared by the child scripts: a recording socket and a manager.
PRELUDE = textwrap.dedent(
    """
    import asyncio, os, sys, time, threading, warnings
    from vuemantics_pubsub import ConnectionManager, UploadProgressPublisher

    URL = sys.argv[1]

    class WS:
        def __init__(self):
            self.sent = []
        async def send_text(self, data):
            self.sent.append(data)

    async def until(predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            await asyncio.sleep(0.005)
    """
)


def check_clean_exit(rc: int, out: str, err: str, *expected_lines: str) -> None:
    """Exit status 0, no traceback or fatal error on stderr, each expected line on stdout."""
    report = f"exit status {rc}\n--- stdout\n{out}\n--- stderr\n{err[-4000:]}"
    assert rc == 0, report
    assert "Traceback" not in err, report
    assert "Fatal Python error" not in err, report
    lines = out.splitlines()
    for line in expected_lines:
        assert line in lines, f"missing {line!r} on stdout\n{report}"


@pytest.mark.parametrize("pending", [False, True], ids=["idle", "publishes-pending"])
def test_exit_without_stop_is_clean(redis_server, pending) -> None:
    """asyncio.run() returns (and the interpreter exits) with a started publisher never
    stopped — optionally with publishes still pending: exit 0 in time, no traceback."""
    code = PRELUDE + textwrap.dedent(
        """
        PENDING = sys.argv[2] == "1"
        KEEP = []

        async def main():
            manager = ConnectionManager()
            ws = WS()
            await manager.connect("u", ws)
            await manager.subscribe_upload("u", "exit-without-stop")
            publisher = UploadProgressPublisher(URL, manager=manager)
            KEEP.append(publisher)          # still referenced at interpreter exit
            await publisher.start()
            for i in range(100):
                await publisher.publish_progress("exit-without-stop", f"m{i}")
            await until(lambda: len(ws.sent) == 100)
            if PENDING:
                for i in range(1000):       # never awaited
                    KEEP.append(asyncio.ensure_future(publisher.publish_progress("exit-without-stop", f"p{i}")))
            print("published", flush=True)

        asyncio.run(main())
        print("returned", flush=True)
        """
    )
    rc, out, err = run_python(code, redis_server.url, "1" if pending else "0", timeout=15)
    check_clean_exit(rc, out, err, "published", "returned")


@pytest.mark.parametrize("then", ["stop-in-new-loop", "never-stop"])
def test_loop_closed_before_stop(redis_server, then) -> None:
    """start() and publishes in one asyncio.run(); that loop closes. Then stop() in a NEW
    asyncio.run() returns well under 2 s — or stop() is never called. Exit 0, no hang."""
    code = PRELUDE + textwrap.dedent(
        """
        manager = ConnectionManager()
        publisher = UploadProgressPublisher(URL, manager=manager)

        async def first():
            ws = WS()
            await manager.connect("u", ws)
            await manager.subscribe_upload("u", "loop-closed")
            await publisher.start()
            for i in range(50):
                await publisher.publish_progress("loop-closed", f"m{i}")
            await until(lambda: len(ws.sent) == 50)

        asyncio.run(first())
        print("first loop closed", flush=True)

        if sys.argv[2] == "stop-in-new-loop":
            async def second():
                began = time.monotonic()
                await asyncio.wait_for(publisher.stop(), timeout=5)
                took = time.monotonic() - began
                print(f"stop took {took:.3f}", flush=True)
                assert took < 2.0, took
                await asyncio.wait_for(publisher.stop(), timeout=5)  # idempotent
                print("stopped", flush=True)
            asyncio.run(second())
        print("end", flush=True)
        """
    )
    rc, out, err = run_python(code, redis_server.url, then, timeout=15)
    expected = ["first loop closed", "end"] + (["stopped"] if then == "stop-in-new-loop" else [])
    check_clean_exit(rc, out, err, *expected)


def test_stop_racing_incoming_flood_returns_quickly(redis_server) -> None:
    """A raw redis-py client floods the publisher's channels (and 500 of its own publishes are
    pending) while stop() is called: stop() returns in < 2 s, every pending publish awaitable
    is resolved, the process exits 0."""
    code = PRELUDE + textwrap.dedent(
        """
        import redis

        halt = threading.Event()
        flooded = [0]

        def flood():
            client = redis.Redis.from_url(URL)
            pipe_size = 200
            while not halt.is_set():
                pipe = client.pipeline(transaction=False)
                for _ in range(pipe_size):
                    pipe.publish("upload:flood", "x" * 64)
                    pipe.publish("user:flooded", "y" * 64)
                pipe.execute()
                flooded[0] += 2 * pipe_size
            client.close()

        async def main():
            manager = ConnectionManager()
            sockets = [WS() for _ in range(3)]
            for ws in sockets:
                await manager.connect("flooded", ws)
            await manager.subscribe_upload("flooded", "flood")
            publisher = UploadProgressPublisher(URL, manager=manager)
            await publisher.start()
            thread = threading.Thread(target=flood, daemon=True)
            thread.start()
            try:
                await until(lambda: len(sockets[0].sent) > 2000, timeout=10)
                pending = [asyncio.ensure_future(publisher.publish_progress("flood", f"p{i}"))
                           for i in range(500)]
                began = time.monotonic()
                await asyncio.wait_for(publisher.stop(), timeout=5)
                took = time.monotonic() - began
                print(f"stop took {took:.3f} with {len(sockets[0].sent)} delivered", flush=True)
                assert took < 2.0, took
                done, not_done = await asyncio.wait(pending, timeout=2)
                assert not not_done, f"{len(not_done)} publish awaitables left pending after stop()"
                assert not publisher.running
                print("all resolved", flush=True)
            finally:
                halt.set()
                thread.join(timeout=5)

        asyncio.run(main())
        print("end", flush=True)
        """
    )
    rc, out, err = run_python(code, redis_server.url, timeout=30)
    check_clean_exit(rc, out, err, "all resolved", "end")


FORK_SCRIPT = PRELUDE + textwrap.dedent(
    """
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "process is multi-threaded"
    TAG = sys.argv[2]

    loop = asyncio.new_event_loop()
    manager = ConnectionManager()
    parent_ws = WS()

    async def parent_setup():
        await manager.connect("parent", parent_ws)
        await manager.subscribe_upload("parent", TAG + "-parent")
        await inherited.start()
        await inherited.publish_progress(TAG + "-parent", "before fork")
        await until(lambda: parent_ws.sent == ["before fork"])

    inherited = UploadProgressPublisher(URL, manager=manager)
    loop.run_until_complete(parent_setup())
    sys.stdout.flush()
    sys.stderr.flush()

    pid = os.fork()
    if pid == 0:
        # ---- child: the inherited publisher refuses, a new one works ----
        child_loop = asyncio.new_event_loop()
        asyncio.set_event_loop(child_loop)

        async def refuses(what, make):
            try:
                await asyncio.wait_for(make(), timeout=2)
            except RuntimeError as exc:
                text = str(exc)
                assert "fork" in text.lower(), f"{what}: RuntimeError without 'fork': {text!r}"
                print(f"child: {what} refused: {text}", flush=True)
                return
            except asyncio.TimeoutError:
                raise AssertionError(f"{what} on the inherited publisher hung")
            raise AssertionError(f"{what} on the inherited publisher did not raise")

        async def child():
            await refuses("publish_progress", lambda: inherited.publish_progress(TAG + "-parent", "from child"))
            await refuses("publish_to_user", lambda: inherited.publish_to_user("parent", "from child"))
            await refuses("start", lambda: inherited.start())
            await refuses("flush", lambda: inherited.flush())
            # stop() on the inherited one may refuse too; it must not hang either way
            try:
                await asyncio.wait_for(inherited.stop(), timeout=2)
            except RuntimeError as exc:
                assert "fork" in str(exc).lower(), str(exc)
            inherited.stats()

            own_manager = ConnectionManager()
            ws = WS()
            await own_manager.connect("child", ws)
            await own_manager.subscribe_upload("child", TAG + "-child")
            own = UploadProgressPublisher(URL, manager=own_manager)
            await asyncio.wait_for(own.start(), timeout=5)
            assert own.connected, own.stats()
            await asyncio.wait_for(own.publish_progress(TAG + "-child", "child message"), timeout=5)
            await until(lambda: ws.sent == ["child message"])
            await asyncio.wait_for(own.stop(), timeout=5)
            print("child: own publisher delivered", flush=True)

        try:
            child_loop.run_until_complete(child())
        except BaseException as exc:
            import traceback
            traceback.print_exc()
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(3)
        child_loop.close()
        print("child: exiting", flush=True)
        sys.exit(0)          # a normal interpreter exit, with the inherited publisher alive

    # ---- parent: wait for the child (bounded), then check it is unaffected ----
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("parent: child hung", flush=True)
            sys.exit(4)
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status)
    print(f"parent: child exit status {code}", flush=True)

    async def parent_after():
        assert inherited.connected, inherited.stats()
        await inherited.publish_progress(TAG + "-parent", "after fork")
        await until(lambda: parent_ws.sent == ["before fork", "after fork"])
        began = time.monotonic()
        await asyncio.wait_for(inherited.stop(), timeout=5)
        assert time.monotonic() - began < 2.0

    loop.run_until_complete(parent_after())
    loop.close()
    print("parent: unaffected", flush=True)
    """
)


def test_fork_child_refuses_inherited_publisher_and_can_start_its_own(redis_server) -> None:
    """In a subprocess: a started publisher, then os.fork(). In the child every use of the
    inherited publisher raises RuntimeError mentioning fork (no hang); the child's own new
    publisher starts and delivers; the child exits 0 normally. The parent keeps working."""
    rc, out, err = run_python(FORK_SCRIPT, redis_server.url, unique("fork"), timeout=40)
    check_clean_exit(
        rc, out, err,
        "child: own publisher delivered", "child: exiting",
        "parent: child exit status 0", "parent: unaffected",
    )
    for what in ("publish_progress", "publish_to_user", "start", "flush"):
        assert any(line.startswith(f"child: {what} refused:") for line in out.splitlines()), out


async def test_use_from_a_foreign_event_loop_raises_runtime_error(publisher, manager) -> None:
    """A publisher bound to this loop (still running), used from a loop in another thread:
    each call raises RuntimeError mentioning "event loop"; the publisher keeps working here."""
    upload = unique("upload")
    user = unique("alice")
    [ws] = await connect_user(manager, user, uploads=[upload])
    await publisher.start()
    await publisher.publish_progress(upload, "home loop")
    await wait_for_sent(ws, 1)

    results: dict[str, BaseException | None] = {}

    def other_thread() -> None:
        async def attempt(name: str, call) -> None:
            try:
                await asyncio.wait_for(call(), timeout=2)
            except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
                results[name] = exc
            else:
                results[name] = None

        async def main() -> None:
            await attempt("publish_progress", lambda: publisher.publish_progress(upload, "foreign"))
            await attempt("publish_to_user", lambda: publisher.publish_to_user(user, "foreign"))
            await attempt("start", publisher.start)
            await attempt("flush", publisher.flush)

        asyncio.run(main())

    thread = threading.Thread(target=other_thread)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive(), "the foreign-loop thread hung"

    for name in ("publish_progress", "publish_to_user", "start", "flush"):
        exc = results.get(name)
        assert isinstance(exc, RuntimeError), f"{name} from a foreign loop: {exc!r}"
        assert "event loop" in str(exc), f"{name}: unclear error {exc!r}"

    await publisher.publish_progress(upload, "home loop again")
    await wait_for_sent(ws, 2)
    await asyncio.sleep(0.2)
    assert ws.sent == ["home loop", "home loop again"]
    assert publisher.connected is True
