"""In-memory Kafka-protocol broker for development only (``paperwire broker``).

This module owns the dev broker: it hosts librdkafka's *mock cluster* (shipped inside the
confluent-kafka wheel) through ctypes and makes it reachable on a fixed address. Nothing is
persisted - topics, records and committed offsets live in this process and vanish when it
stops. For laptops, demos and integration tests; never for production.

Why the proxies: the mock cluster listens on random loopback ports, and
``rd_kafka_mock_broker_set_host_port`` only changes the address it *advertises* in metadata.
So mock broker ``i`` (1-based) gets a small TCP forwarder on ``host:port+i-1`` and advertises
exactly that address; clients that reconnect from metadata stay on the proxies. The forwarders
also reorder one request to work around a mock bug in consumer-group syncing (_SyncGroupGate).

Behaviour of the mock worth knowing (librdkafka 2.16, kafka-python 2.3):

* Unknown topics are auto-created on their first Metadata request (kafka-python asks with
  AllowAutoTopicCreation) with 4 partitions - librdkafka's fixed default, independent of our
  ``partitions`` argument, which only sets what :meth:`DevBroker.create_topic` and
  :func:`serve` use when not told otherwise.
* There is no CreateTopics API, so ``KafkaAdminClient.create_topics`` fails
  (IncompatibleBrokerVersion; NodeNotReadyError with a pinned api_version); create topics
  here or rely on auto-creation.
* kafka-python should use ``api_version=(2, 3)``: auto-detection logs an ERROR per connection
  (it cannot decode the mock's ApiVersions v4 error reply) and then picks LeaveGroup v3, which
  the mock misparses, so closing consumers never leave their group cleanly.
* A member joining a running group waits ``session_timeout_ms - 1 s`` for the rebalance (the
  mock's join window), i.e. 9 s with kafka-python defaults.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import signal
import struct
import threading
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import confluent_kafka

from paperwire.errors import ServiceUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_RD_KAFKA_PRODUCER = 0
_ERRSTR_SIZE = 512
_PIPE_CHUNK = 64 * 1024
_SYNC_GROUP_API_KEY = 14
# How long a group leader's SyncGroup may wait for its followers' (see _SyncGroupGate).
_LEADER_SYNC_WAIT_S = 5.0
# Followers' frames are written to their sockets, not yet read by the mock; give it a moment.
_LEADER_SYNC_SETTLE_S = 0.02

# void (*log_cb)(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
# ``level`` is a syslog level.
_LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p)


@_LOG_CB
def _forward_librdkafka_log(_rk: int | None, level: int, fac: bytes, buf: bytes) -> None:
    # librdkafka would write to stderr; route it through logging. Notices and below go to
    # DEBUG: the only ones our idle owner handle emits are about itself having no brokers.
    py_level = logging.ERROR if level <= 3 else logging.WARNING if level == 4 else logging.DEBUG
    log.log(py_level, "librdkafka %s: %s", fac.decode(errors="replace"), buf.decode(errors="replace"))


def _load_librdkafka() -> ctypes.CDLL:
    """Load the librdkafka bundled with confluent-kafka and declare the calls we use."""
    libs_dir = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs_dir.glob("librdkafka*.so*"))
    path = str(candidates[0]) if candidates else ctypes.util.find_library("rdkafka")
    if path is None:
        raise ServiceUnavailable(
            f"librdkafka not found in {libs_dir} or on the library path; the dev broker needs the confluent-kafka wheel"
        )
    lib = ctypes.CDLL(path)  # CDLL releases the GIL during calls, so destroy() can join threads

    # Signatures from src/rdkafka.h and src/rdkafka_mock.h. Handles are opaque pointers;
    # rd_kafka_resp_err_t and rd_kafka_conf_res_t are C enums (int).
    p, i, i16, i32, s = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int16, ctypes.c_int32, ctypes.c_char_p)
    decls = {
        "rd_kafka_conf_new": (p, []),
        "rd_kafka_conf_set_log_cb": (None, [p, _LOG_CB]),
        "rd_kafka_conf_destroy": (None, [p]),
        "rd_kafka_new": (p, [i, p, s, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [p]),
        "rd_kafka_err2str": (s, [i]),
        "rd_kafka_mock_cluster_new": (p, [p, i]),
        "rd_kafka_mock_cluster_destroy": (None, [p]),
        "rd_kafka_mock_cluster_bootstraps": (s, [p]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [p, i32]),
        "rd_kafka_mock_topic_create": (i, [p, s, i, i]),
        "rd_kafka_mock_broker_set_host_port": (None, [p, i32, s, i]),
        "rd_kafka_mock_broker_set_down": (i, [p, i32]),
        "rd_kafka_mock_broker_set_up": (i, [p, i32]),
        # The _array variant: calling C varargs through ctypes is not portable.
        "rd_kafka_mock_push_request_errors_array": (None, [p, i16, ctypes.c_size_t, ctypes.POINTER(i)]),
    }
    for name, (restype, argtypes) in decls.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class _Reader:
    """Just enough of the Kafka wire format to read a SyncGroup request's leading fields."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def int(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self, compact: bool) -> bytes:
        n = self.uvarint() - 1 if compact else self.int(">h")
        start, self.pos = self.pos, self.pos + max(n, 0)
        return self.buf[start : self.pos]


def _parse_sync_group(frame: bytes) -> tuple[bytes, int, int] | None:
    """(group id, generation, number of assignments) of a SyncGroup request, else None."""
    try:
        r = _Reader(frame, 0)
        api_key, version = r.int(">h"), r.int(">h")
        if api_key != _SYNC_GROUP_API_KEY:
            return None
        r.pos += 4  # correlation id
        r.string(compact=False)  # client id is never compact, even in flexible headers
        flexible = version >= 4
        if flexible:
            for _ in range(r.uvarint()):  # header tagged fields
                r.uvarint()
                r.pos += r.uvarint()
        group = r.string(flexible)
        generation = r.int(">i")
        r.string(flexible)  # member id
        for _ in range((version >= 3) + 2 * (version >= 5)):  # instance id, protocol type/name
            r.string(flexible)
        count = r.uvarint() - 1 if flexible else r.int(">i")
    except (struct.error, IndexError):
        return None  # not ours to judge; forward it untouched
    return group, generation, count


class _SyncGroupGate:
    """Let followers' SyncGroup requests reach the mock before their leader's.

    The mock completes a sync round as soon as the leader's SyncGroup (carrying every
    member's assignment) arrives, answers only members already waiting, and rejects any later
    follower SyncGroup with INVALID_REQUEST. kafka-python raises that from ``poll()``; the
    rejoin starts a new rebalance and two consumers can take dozens of rounds to settle. Real
    brokers wait for all members, so we hold the leader's request until the followers' have
    gone ahead (or a few seconds passed). Single-member groups pass straight through.
    """

    def __init__(self) -> None:
        self._followers: Counter[tuple[bytes, int]] = Counter()
        self._changed = asyncio.Condition()

    async def admit(self, frame: bytes) -> None:
        sync = _parse_sync_group(frame)
        if sync is None:
            return
        group, generation, assignments = sync
        key = (group, generation)
        async with self._changed:
            if assignments == 0:  # a follower
                self._followers[key] += 1
                self._changed.notify_all()
                return
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._followers[key] >= assignments - 1), _LEADER_SYNC_WAIT_S
                )
            except TimeoutError:
                log.debug("group %r generation %d: followers slow to sync", group, generation)
            del self._followers[key]
        if assignments > 1:
            await asyncio.sleep(_LEADER_SYNC_SETTLE_S)


class _Proxy:
    """TCP forwarders (one per mock broker) on an asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="paperwire-broker-proxy", daemon=True)
        self._addresses: list[tuple[str, int]] = []
        self.upstream_ports: list[int] = []  # the mock brokers' ports, set once it exists
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._gate = _SyncGroupGate()
        self._closing = False

    def start(self, addresses: list[tuple[str, int]]) -> None:
        """Listen on each (host, port); connections to the i-th go to upstream_ports[i]."""
        self._addresses = addresses
        self._thread.start()
        for index in range(len(addresses)):
            self._servers.append(self._run(self._listen(index)))

    def pause(self, index: int) -> None:
        """Stop listening on address ``index``: clients get "connection refused", as from a
        dead broker, rather than a connection that drops at once."""
        self._run(self._close_server(self._servers[index]))

    def resume(self, index: int) -> None:
        if not self._servers[index].is_serving():
            self._servers[index] = self._run(self._listen(index))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @staticmethod
    async def _close_server(server: asyncio.Server) -> None:
        server.close()
        await server.wait_closed()

    async def _listen(self, index: int) -> asyncio.Server:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                if not self._closing and index < len(self.upstream_ports):
                    await self._forward(reader, writer, self.upstream_ports[index])
            except asyncio.CancelledError:
                # Only stop() cancels us. Ending quietly matters: on 3.11 asyncio.streams logs
                # a cancelled client task as "Exception in callback".
                pass
            finally:
                writer.close()
                self._connections.discard(task)

        host, port = self._addresses[index]
        return await asyncio.start_server(on_client, host, port)

    async def _forward(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter, upstream: int) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:  # broker went down meanwhile: drop the client, it will retry
            return
        pumps = [
            asyncio.create_task(self._pump_requests(c_reader, u_writer)),
            asyncio.create_task(self._pump(u_reader, c_writer)),
        ]
        try:
            # Either side closing ends the connection, as with a real broker socket.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Close first: stop() may cancel us during the await below. (on_client closes the
            # client side.)
            u_writer.close()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Client -> broker goes frame by frame (4-byte size prefix) so the gate can see them.
        try:
            while True:
                size = await reader.readexactly(4)
                frame = await reader.readexactly(int.from_bytes(size, "big"))
                await self._gate.admit(frame)
                writer.write(size + frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_PIPE_CHUNK):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close_all() -> None:
            self._closing = True
            for server in self._servers:
                server.close()
            # Server.close() leaves accepted connections open; clients must see the broker go.
            for task in list(self._connections):
                task.cancel()
            # Connections accepted just before the close start their task a few loop turns
            # later (and then close at once, seeing _closing); wait until all are done.
            me = asyncio.current_task()
            while others := asyncio.all_tasks() - {me}:
                await asyncio.wait(others)
            await asyncio.sleep(0)  # lets the closed transports release their sockets

        self._run(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class DevBroker:
    """An in-memory Kafka cluster of ``brokers`` nodes on ``host:port`` .. ``host:port+n-1``.

    Broker ids are 1..n. Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, brokers: int = 1, partitions: int = 4) -> None:
        if brokers < 1 or partitions < 1:
            raise ValueError("brokers and partitions must be >= 1")
        self.host, self.port, self.brokers, self.partitions = host, port, brokers, partitions
        self._lib: ctypes.CDLL | None = None
        self._rk: int | None = None
        self._mcluster: int | None = None
        self._proxy: _Proxy | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.port + i}" for i in range(self.brokers))

    def start(self) -> DevBroker:
        if self._mcluster is not None:
            return self
        self._lib = lib = _load_librdkafka()
        try:
            # Claim the fixed addresses before the mock binds its random ports, which could
            # otherwise take one of ours (test suites ask for free ephemeral ports).
            self._proxy = _Proxy()
            try:
                self._proxy.start([(self.host, self.port + i) for i in range(self.brokers)])
            except OSError as exc:
                raise ServiceUnavailable(
                    f"dev broker cannot listen on {self.bootstrap} ({exc}); "
                    "is a broker already running there? pick another port"
                ) from exc

            self._rk = self._new_owner_handle(lib)
            self._mcluster = lib.rd_kafka_mock_cluster_new(self._rk, self.brokers)
            if not self._mcluster:
                raise ServiceUnavailable("librdkafka could not create its mock cluster")
            # The mock holds a new group's first join for 3 s (group.initial.rebalance.delay);
            # a dev broker should hand out assignments at once.
            lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mcluster, 0)

            # "127.0.0.1:p1,127.0.0.1:p2,..." in broker-id order.
            bootstraps = lib.rd_kafka_mock_cluster_bootstraps(self._mcluster).decode()
            self._proxy.upstream_ports = [int(addr.rsplit(":", 1)[1]) for addr in bootstraps.split(",")]
            for broker_id in range(1, self.brokers + 1):
                lib.rd_kafka_mock_broker_set_host_port(
                    self._mcluster, broker_id, self.host.encode(), self.port + broker_id - 1
                )
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _new_owner_handle(lib: ctypes.CDLL) -> int:
        # The mock cluster's thread belongs to a client handle; an idle producer will do.
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set_log_cb(conf, _forward_librdkafka_log)
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:  # rd_kafka_new only takes ownership of conf on success
            lib.rd_kafka_conf_destroy(conf)
            raise ServiceUnavailable(f"librdkafka handle: {errstr.value.decode()}")
        return rk

    def stop(self) -> None:
        # Proxies first so clients see the disconnect, then the cluster, then its owner.
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._lib is not None:
            if self._mcluster:
                self._lib.rd_kafka_mock_cluster_destroy(self._mcluster)
            if self._rk:
                self._lib.rd_kafka_destroy(self._rk)
        self._mcluster = self._rk = None

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _cluster(self) -> tuple[ctypes.CDLL, int]:
        if self._lib is None or not self._mcluster:
            raise RuntimeError("DevBroker is not started")
        return self._lib, self._mcluster

    def _check(self, err: int, what: str) -> None:
        if err:
            lib, _ = self._cluster()
            raise ValueError(f"{what}: {lib.rd_kafka_err2str(err).decode()}")

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """Create ``name`` with ``partitions`` (default: the broker's) partitions."""
        lib, mc = self._cluster()
        err = lib.rd_kafka_mock_topic_create(mc, name.encode(), partitions or self.partitions, min(3, self.brokers))
        self._check(err, f"create topic {name!r}")

    def set_down(self, broker_id: int) -> None:
        """Take broker ``broker_id`` down: its connections drop and new ones are refused."""
        lib, mc = self._cluster()
        self._check(lib.rd_kafka_mock_broker_set_down(mc, broker_id), f"broker {broker_id} down")
        assert self._proxy is not None
        self._proxy.pause(broker_id - 1)

    def set_up(self, broker_id: int) -> None:
        lib, mc = self._cluster()
        self._check(lib.rd_kafka_mock_broker_set_up(mc, broker_id), f"broker {broker_id} up")
        assert self._proxy is not None
        try:
            self._proxy.resume(broker_id - 1)
        except OSError as exc:
            raise ServiceUnavailable(
                f"dev broker {broker_id} cannot listen again on {self.host}:"
                f"{self.port + broker_id - 1}: {exc.strerror or exc}"
            ) from exc

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """Fail the next ``len(errors)`` requests of ``api_key`` with these Kafka error codes."""
        lib, mc = self._cluster()
        codes = (ctypes.c_int * len(errors))(*errors)
        lib.rd_kafka_mock_push_request_errors_array(mc, api_key, len(errors), codes)


def serve(host: str, port: int, brokers: int, partitions: int, topics: list[str]) -> None:
    """Run a DevBroker with ``topics`` created until SIGINT or SIGTERM, then stop cleanly."""
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with DevBroker(host, port, brokers, partitions) as broker:
            log.info("paperwire dev broker (in-memory, development only) on %s", broker.bootstrap)
            for topic in topics:
                broker.create_topic(topic, partitions)
                log.info("created topic %s with %d partitions", topic, partitions)
            stopping.wait()
            log.info("dev broker stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
