"""The snapshot topic: live state the aggregator publishes and every API replica reads.

The topic is compacted (one live record per key): a queue's waiting calls, an agent's
current state, and a heartbeat per events-topic partition (its applied offset and the
partition's end, for lag and staleness). Instants are ms since the epoch (UTC); `as_of_ms`
is the owning partition's event-time watermark, `published_ms` the aggregator's clock.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ..kpi.agents import Change


class QueueLive(msgspec.Struct, kw_only=True, tag="queue"):
    """Calls waiting in one queue: the instant each one entered it (ms)."""

    tenant_id: str
    queue_id: str
    waiting_since_ms: list[int]
    as_of_ms: int
    published_ms: int


class AgentLive(msgspec.Struct, kw_only=True, tag="agent"):
    """An agent's latest state change."""

    tenant_id: str
    agent_id: str
    change: Change
    published_ms: int


class PartitionLive(msgspec.Struct, kw_only=True, tag="partition"):
    """Progress of one events-topic partition: last applied offset and the end of the
    partition (next offset) when published; `store_error` when writes are failing."""

    topic: str
    partition: int
    applied_offset: int
    end_offset: int
    published_ms: int
    store_error: str | None = None


Snapshot = QueueLive | AgentLive | PartitionLive

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Snapshot)


def snapshot_key(snapshot: Snapshot) -> bytes:
    if isinstance(snapshot, QueueLive):
        return _encoder.encode(["queue", snapshot.tenant_id, snapshot.queue_id])
    if isinstance(snapshot, AgentLive):
        return _encoder.encode(["agent", snapshot.tenant_id, snapshot.agent_id])
    return _encoder.encode(["partition", snapshot.topic, snapshot.partition])


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode_snapshot(value: bytes) -> Snapshot:
    snapshot: Snapshot = _decoder.decode(value)
    return snapshot
