"""WebSocket messages shaped like the backend's ``core/websocket/messages.py`` (pydantic v2)."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ProcessingStatus(str, Enum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class ProcessingStage(str, Enum):
    QUEUED = "queued"
    EXTRACTING_FRAMES = "extracting_frames"
    VISION_ANALYSIS = "vision_analysis"
    DESCRIPTION_AUDIT = "description_audit"
    EMBEDDING_GENERATION = "embedding_generation"
    INDEXING = "indexing"
    COMPLETED = "completed"
    FAILED = "failed"


# the pipeline's stages in order, with the percent each one reports
PIPELINE: tuple[tuple[ProcessingStage, int], ...] = (
    (ProcessingStage.QUEUED, 0),
    (ProcessingStage.EXTRACTING_FRAMES, 15),
    (ProcessingStage.VISION_ANALYSIS, 35),
    (ProcessingStage.DESCRIPTION_AUDIT, 55),
    (ProcessingStage.EMBEDDING_GENERATION, 75),
    (ProcessingStage.INDEXING, 90),
    (ProcessingStage.COMPLETED, 100),
)


# -- server -> client ------------------------------------------------------------------


class UploadProgressPayload(BaseModel):
    upload_id: str
    status: ProcessingStatus
    stage: ProcessingStage
    progress_percent: int = Field(ge=0, le=100)
    message: str
    error_message: str | None = None
    description_audit_score: int | None = None


class UploadProgressUpdate(BaseModel):
    action: Literal["upload_progress"] = "upload_progress"
    payload: UploadProgressPayload
    timestamp: datetime = Field(default_factory=_now)


class UploadCompleted(BaseModel):
    action: Literal["upload_completed"] = "upload_completed"
    upload_id: str
    description: str
    audit_score: int | None = None
    timestamp: datetime = Field(default_factory=_now)


class UploadFailed(BaseModel):
    action: Literal["upload_failed"] = "upload_failed"
    upload_id: str
    error_message: str
    timestamp: datetime = Field(default_factory=_now)


class Notification(BaseModel):
    """A user-level message (not upload-specific)."""

    action: Literal["notification"] = "notification"
    message: str
    timestamp: datetime = Field(default_factory=_now)


class ErrorMessage(BaseModel):
    action: Literal["error"] = "error"
    message: str
    timestamp: datetime = Field(default_factory=_now)


ServerMessage = Annotated[
    UploadProgressUpdate | UploadCompleted | UploadFailed | Notification | ErrorMessage,
    Field(discriminator="action"),
]
server_message = TypeAdapter(ServerMessage)


# -- client -> server ------------------------------------------------------------------


class SubscribeUpload(BaseModel):
    action: Literal["subscribe_upload"] = "subscribe_upload"
    upload_id: str


class UnsubscribeUpload(BaseModel):
    action: Literal["unsubscribe_upload"] = "unsubscribe_upload"
    upload_id: str


class Pong(BaseModel):
    action: Literal["pong"] = "pong"


ClientMessage = Annotated[SubscribeUpload | UnsubscribeUpload | Pong, Field(discriminator="action")]
client_message = TypeAdapter(ClientMessage)
