"""Run as a separate OS process by test_cross_process.py: one backend instance that
publishes progress, the way the AI pipeline does, then shuts down.

usage: python remote_publisher.py REDIS_URL UPLOAD_ID USER_ID COUNT
"""

from __future__ import annotations

import asyncio
import sys


async def main(redis_url: str, upload_id: str, user_id: str, count: int) -> None:
    from vuemantics_pubsub import ConnectionManager, get_publisher, init_publisher

    init_publisher(redis_url, manager=ConnectionManager())
    publisher = get_publisher()
    await publisher.start()
    for seq in range(count):
        await publisher.publish_progress(upload_id, f"remote {seq}")
    await publisher.publish_to_user(user_id, "remote done")
    await publisher.stop()
    print("published", count + 1, flush=True)


if __name__ == "__main__":
    url, upload, user, n = sys.argv[1:5]
    asyncio.run(main(url, upload, user, int(n)))
