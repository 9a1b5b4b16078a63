"""A TCP proxy in front of the Kafka mock broker that a test can pause and resume.

Kafka clients bootstrap through one address and then connect to the brokers' *advertised*
addresses from the cluster metadata; the mock broker advertises its own 127.0.0.1:PORT,
so a plain proxy would be bypassed after the first request. This proxy therefore follows
the Kafka framing (a 4-byte big-endian length before every request and response), notes
each request's api key and version by correlation id, and rewrites the broker port in
Metadata (api key 3) and FindCoordinator (api key 10) responses to its own port. Ports are
fixed-size int32 fields, so responses keep their length. Both the classic and the flexible
(tagged-field, compact-string) encodings are handled.

`pause()` blackholes the path: bytes already in flight stay in the proxy, new connections
are accepted but not forwarded, nothing is reset, as with a network partition; `resume()`
lets everything through again. The proxy runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading

log = logging.getLogger(__name__)

METADATA, FIND_COORDINATOR = 3, 10
# First flexible (KIP-482) version of each rewritten response.
_FLEXIBLE_FROM = {METADATA: 9, FIND_COORDINATOR: 3}


class _Reader:
    """Offsets into one response body."""

    def __init__(self, data: bytearray, at: int) -> None:
        self.data = data
        self.at = at

    def skip(self, n: int) -> None:
        self.at += n

    def int32(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.at)
        self.at += 4
        return int(value)

    def int16(self) -> int:
        (value,) = struct.unpack_from(">h", self.data, self.at)
        self.at += 2
        return int(value)

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self, flexible: bool) -> None:
        """Skip a (nullable) string."""
        n = self.uvarint() - 1 if flexible else self.int16()
        self.skip(max(n, 0))

    def array_len(self, flexible: bool) -> int:
        return self.uvarint() - 1 if flexible else self.int32()

    def tags(self, flexible: bool) -> None:
        if flexible:
            for _ in range(self.uvarint()):
                self.uvarint()
                self.skip(self.uvarint())

    def set_port(self, port: int) -> None:
        struct.pack_into(">i", self.data, self.at, port)
        self.at += 4


def rewrite(api_key: int, version: int, frame: bytearray, port: int) -> int:
    """Point every broker address in a Metadata or FindCoordinator response (`frame`: the
    bytes after the length prefix) at `port`; returns how many were rewritten."""
    flexible = version >= _FLEXIBLE_FROM[api_key]
    r = _Reader(frame, 4)  # after the correlation id
    r.tags(flexible)  # response header v1
    done = 0
    if api_key == METADATA:
        if version >= 3:
            r.skip(4)  # throttle_time_ms
        for _ in range(r.array_len(flexible)):
            r.skip(4)  # node_id
            r.string(flexible)  # host
            r.set_port(port)
            done += 1
            if version >= 1:
                r.string(flexible)  # rack
            r.tags(flexible)
        return done
    if version >= 4:  # batched: one coordinator per key
        r.skip(4)  # throttle_time_ms
        for _ in range(r.array_len(flexible)):
            r.string(flexible)  # key
            r.skip(4)  # node_id
            r.string(flexible)  # host
            r.set_port(port)
            done += 1
            r.skip(2)  # error_code
            r.string(flexible)  # error_message
            r.tags(flexible)
        return done
    if version >= 1:
        r.skip(4)  # throttle_time_ms
    r.skip(2)  # error_code
    if version >= 1:
        r.string(flexible)  # error_message
    r.skip(4)  # node_id
    r.string(flexible)  # host
    r.set_port(port)
    return 1


class KafkaProxy:
    """Listens on 127.0.0.1:`port` and forwards to `upstream` ("host:port")."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.port = 0
        self.connections = 0
        self.rewritten = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def pause(self) -> None:
        """Stop forwarding (in both directions, on every connection, new ones included)."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        up_writer = None
        try:
            await self._open.wait()
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            pending: dict[int, tuple[int, int]] = {}  # correlation id -> (api key, version)
            pumps = {
                asyncio.ensure_future(self._requests(reader, up_writer, pending)),
                asyncio.ensure_future(self._responses(up_reader, writer, pending)),
            }
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):  # a path that broke, or the proxy closing
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytearray:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return bytearray(await reader.readexactly(size))

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        pending: dict[int, tuple[int, int]]) -> None:  # fmt: skip
        try:
            while True:
                frame = await self._read_frame(reader)
                await self._open.wait()
                api_key, version, correlation = struct.unpack_from(">hhi", frame, 0)
                pending[correlation] = (api_key, version)
                writer.write(struct.pack(">i", len(frame)) + frame)
                await writer.drain()
        finally:
            writer.close()

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         pending: dict[int, tuple[int, int]]) -> None:  # fmt: skip
        try:
            while True:
                frame = await self._read_frame(reader)
                await self._open.wait()
                (correlation,) = struct.unpack_from(">i", frame, 0)
                api_key, version = pending.pop(correlation, (-1, -1))
                if api_key in _FLEXIBLE_FROM:
                    self.rewritten += rewrite(api_key, version, frame, self.port)
                writer.write(struct.pack(">i", len(frame)) + frame)
                await writer.drain()
        finally:
            writer.close()
