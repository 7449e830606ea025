"""What the admin endpoints answer, as models: the OpenAPI document is generated from them
(app/openapi.py) and the contract tests check every answer against it."""

from typing import Literal

from pydantic import BaseModel, Field


class OrderCounts(BaseModel):
    byStatus: dict[str, int] = {}
    total: int = 0


class WebhookCounts(BaseModel):
    received: int = 0
    duplicated: int = 0
    rejected: int = 0


class PerMinute(BaseModel):
    """Orders settled per minute over the last hour, oldest minute first."""

    start: str = Field(description="The first minute (UTC); the last is the current one.")
    bucketSeconds: int = 60
    paid: list[int] = Field(min_length=60, max_length=60)
    cancelled: list[int] = Field(min_length=60, max_length=60)
    failed: list[int] = Field(min_length=60, max_length=60)


class Stats(BaseModel):
    orders: OrderCounts
    revenuePaid: float
    paymentsLastHour: int
    meanSecondsToPay: float | None = None
    perMinute: PerMinute
    webhooks: WebhookCounts
    live: dict[str, int] = {}
    computations: int | None = None
    generatedAt: str
    mode: Literal["pubsub", "db-poll"] | None = None


class HubCounts(BaseModel):
    channels: int = 0
    handlers: int = 0
    connected: bool = False


class RealtimeStats(BaseModel):
    worker: str | None = None
    activeConnections: int
    byKind: dict[str, int] = {}
    redis: HubCounts
    connections: list[dict] = Field(description="This worker's open connections.")
    totals: dict = {}
