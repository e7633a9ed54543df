"""One backend instance, shaped like vuemantics's: a WebSocket endpoint where users follow
their uploads, a simulated processing pipeline that publishes every stage, and the
lifespan that runs the publisher exactly as the backend's does.

    REDIS_URL=redis://127.0.0.1:PORT/0 INSTANCE_NAME=A uvicorn app.main:app --app-dir tests

Endpoints:
    GET  /health                          readiness: the publisher is subscribed
    GET  /debug/state                     this instance's manager state and publisher stats
    WS   /ws/{user_id}                    client sends {"action":"subscribe_upload","upload_id":...}
    POST /uploads/{upload_id}/process     ?user_id=..&fail_at=<stage>&delay=<s>: starts a job
    POST /users/{user_id}/messages        {"message": "..."}: a user-level message
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError

from vuemantics_pubsub import ConnectionManager, get_publisher, init_publisher, set_manager

from .messages import (
    PIPELINE,
    ErrorMessage,
    Notification,
    ProcessingStage,
    ProcessingStatus,
    SubscribeUpload,
    UnsubscribeUpload,
    UploadCompleted,
    UploadFailed,
    UploadProgressPayload,
    UploadProgressUpdate,
    client_message,
)

INSTANCE = os.environ.get("INSTANCE_NAME", "?")

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter(f"%(levelname)s [{INSTANCE}] %(name)s: %(message)s"))
for _name in ("vuemantics_pubsub", "app"):
    logging.getLogger(_name).addHandler(_handler)
    logging.getLogger(_name).setLevel(logging.INFO)
logger = logging.getLogger("app")

# the backend's core.websocket.manager: one manager per process
manager = ConnectionManager()
_jobs: set[asyncio.Task[None]] = set()


def get_manager() -> ConnectionManager:
    return manager


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    set_manager(manager)  # what the backend gets from core.websocket.manager.get_manager()
    init_publisher()  # the URL comes from $REDIS_URL, as the backend's settings do
    await get_publisher().start()
    try:
        yield
    finally:
        for job in list(_jobs):
            job.cancel()
        await asyncio.gather(*_jobs, return_exceptions=True)
        await get_publisher().stop()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, Any]:
    publisher = get_publisher()
    return {"status": "ok", "instance": INSTANCE, "pid": os.getpid(),
            "running": publisher.running, "connected": publisher.connected}


@app.get("/debug/state")
async def debug_state() -> dict[str, Any]:
    return {
        "instance": INSTANCE,
        "user_connections": {
            user: len(sockets) for user, sockets in manager.user_connections.items() if sockets},
        "upload_subscribers": {
            upload: sorted(users) for upload, users in manager.upload_subscribers.items() if users},
        "publisher": get_publisher().stats(),
    }


@app.websocket("/ws/{user_id}")
async def websocket_endpoint(websocket: WebSocket, user_id: str) -> None:
    await websocket.accept()
    await manager.connect(user_id, websocket)
    try:
        while True:
            text = await websocket.receive_text()
            try:
                message = client_message.validate_json(text)
            except ValidationError as exc:
                error = ErrorMessage(message=f"invalid message ({exc.error_count()} error(s))")
                await websocket.send_text(error.model_dump_json())
                continue
            if isinstance(message, SubscribeUpload):
                await manager.subscribe_upload(user_id, message.upload_id)
            elif isinstance(message, UnsubscribeUpload):
                await manager.unsubscribe_upload(user_id, message.upload_id)
            # Pong: nothing to do
    except WebSocketDisconnect:
        pass
    finally:
        await manager.disconnect(user_id, websocket)


def _progress(upload_id: str, stage: ProcessingStage, percent: int, status: ProcessingStatus,
              message: str, error: str | None = None,
              score: int | None = None) -> UploadProgressUpdate:
    return UploadProgressUpdate(payload=UploadProgressPayload(
        upload_id=upload_id, status=status, stage=stage, progress_percent=percent,
        message=message, error_message=error, description_audit_score=score))


async def run_pipeline(upload_id: str, user_id: str, fail_at: ProcessingStage | None,
                       delay: float) -> None:
    """The AI pipeline, simulated: one publish per stage, as the backend's does."""
    publisher = get_publisher()
    for stage, percent in PIPELINE:
        if stage == fail_at:
            error = f"{stage.value} failed (simulated)"
            await publisher.publish_progress(str(upload_id), _progress(
                upload_id, ProcessingStage.FAILED, percent, ProcessingStatus.FAILED,
                f"Failed during {stage.value}", error=error))
            await publisher.publish_progress(str(upload_id), UploadFailed(
                upload_id=upload_id, error_message=error))
            await publisher.publish_to_user(
                user_id, Notification(message=f"Upload {upload_id} failed"))
            return
        status = (ProcessingStatus.PENDING if stage == ProcessingStage.QUEUED
                  else ProcessingStatus.COMPLETED if stage == ProcessingStage.COMPLETED
                  else ProcessingStatus.PROCESSING)
        await publisher.publish_progress(str(upload_id), _progress(
            upload_id, stage, percent, status, f"{stage.value.replace('_', ' ')} ({INSTANCE})",
            score=87 if percent >= 55 else None))
        if stage != ProcessingStage.COMPLETED:
            await asyncio.sleep(delay)
    await publisher.publish_progress(str(upload_id), UploadCompleted(
        upload_id=upload_id, description="A short video of a dog on a beach", audit_score=87))
    await publisher.publish_to_user(user_id, Notification(message=f"Upload {upload_id} is ready"))


@app.post("/uploads/{upload_id}/process", status_code=202)
async def process_upload(
    upload_id: str,
    user_id: str,
    fail_at: ProcessingStage | None = None,
    delay: float = Query(0.02, ge=0, le=2),
) -> dict[str, Any]:
    job = asyncio.create_task(run_pipeline(upload_id, user_id, fail_at, delay))
    _jobs.add(job)
    job.add_done_callback(_jobs.discard)
    logger.info("processing upload %s for user %s", upload_id, user_id)
    return {"upload_id": upload_id, "instance": INSTANCE, "accepted": True}


class UserMessage(BaseModel):
    message: str


@app.post("/users/{user_id}/messages", status_code=202)
async def message_user(user_id: str, body: UserMessage) -> dict[str, Any]:
    await get_publisher().publish_to_user(user_id, Notification(message=body.message))
    return {"user_id": user_id, "instance": INSTANCE, "published": True}
