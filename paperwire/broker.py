"""In-memory Kafka-protocol broker for development only (``paperwire broker``).

This module owns the dev broker: it hosts librdkafka's *mock cluster* (shipped inside the
confluent-kafka wheel) through ctypes and makes it reachable on a fixed address.

Nothing is persisted; every topic, record and committed offset lives in this process and is
gone when it stops. It is meant for laptops, demos and integration tests - never production.

Why the proxies: the mock cluster listens on random loopback ports and
``rd_kafka_mock_broker_set_host_port`` only changes the address it *advertises* in metadata.
So each mock broker ``i`` (0-based) gets a small TCP forwarder on ``host:port+i`` and is told
to advertise exactly that address; clients that reconnect from metadata stay on the proxies.

Topics that were never created are auto-created by the mock on their first Metadata request
(AllowAutoTopicCreation, which kafka-python sends as true) with 4 partitions - librdkafka's
fixed default, independent of our ``partitions`` argument, which is only what
:meth:`DevBroker.create_topic` uses when it is not told a count. The mock has no CreateTopics
handler, so ``KafkaAdminClient.create_topics`` does not work against it; create topics here.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import signal
import threading
from pathlib import Path
from types import TracebackType

import confluent_kafka

from paperwire.errors import ServiceUnavailable

log = logging.getLogger(__name__)

_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_ERRSTR_SIZE = 512
_PIPE_CHUNK = 64 * 1024

# librdkafka's log callback: void (*)(const rd_kafka_t *rk, int level, const char *fac,
# const char *buf). Levels are syslog levels.
_LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p)


@_LOG_CB
def _forward_librdkafka_log(_rk: int, level: int, fac: bytes, buf: bytes) -> None:
    # librdkafka would otherwise write straight to stderr; route it through logging instead.
    py_level = (
        logging.ERROR if level <= 3 else logging.WARNING if level == 4 else
        logging.INFO if level <= 6 else logging.DEBUG
    )
    log.log(py_level, "librdkafka %s: %s", fac.decode(errors="replace"),
            buf.decode(errors="replace"))


def _load_librdkafka() -> ctypes.CDLL:
    """Load the librdkafka bundled with confluent-kafka and declare the calls we use."""
    libs_dir = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs_dir.glob("librdkafka*.so*"))
    path = str(candidates[0]) if candidates else ctypes.util.find_library("rdkafka")
    if path is None:
        raise ServiceUnavailable(
            f"librdkafka not found (looked in {libs_dir} and the system library path); "
            "the dev broker needs the confluent-kafka wheel"
        )
    lib = ctypes.CDLL(path)

    # Signatures from src/rdkafka.h and src/rdkafka_mock.h; all handles are opaque pointers
    # and rd_kafka_resp_err_t / rd_kafka_conf_res_t are C enums (int).
    p, i, i16, i32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int16, ctypes.c_int32
    decls = {
        "rd_kafka_conf_new": (p, []),
        "rd_kafka_conf_set": (i, [p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.c_size_t]),
        "rd_kafka_conf_set_log_cb": (None, [p, _LOG_CB]),
        "rd_kafka_conf_destroy": (None, [p]),
        "rd_kafka_new": (p, [i, p, ctypes.c_char_p, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [p]),
        "rd_kafka_mock_cluster_new": (p, [p, i]),
        "rd_kafka_mock_cluster_destroy": (None, [p]),
        "rd_kafka_mock_cluster_bootstraps": (ctypes.c_char_p, [p]),
        "rd_kafka_mock_topic_create": (i, [p, ctypes.c_char_p, i, i]),
        "rd_kafka_mock_broker_set_down": (i, [p, i32]),
        "rd_kafka_mock_broker_set_up": (i, [p, i32]),
        "rd_kafka_mock_broker_set_host_port": (None, [p, i32, ctypes.c_char_p, i]),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [p, i32]),
        # The _array variant avoids calling a C varargs function through ctypes.
        "rd_kafka_mock_push_request_errors_array": (None, [p, i16, ctypes.c_size_t,
                                                           ctypes.POINTER(i)]),
        "rd_kafka_err2str": (ctypes.c_char_p, [i]),
    }
    for name, (restype, argtypes) in decls.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class _Proxy:
    """TCP forwarders (one per mock broker) running on an asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="paperwire-broker-proxy", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self, listen: list[tuple[str, int, int]]) -> None:
        """Listen on each (host, port) and forward to 127.0.0.1:upstream_port."""
        self._thread.start()
        for host, port, upstream in listen:
            fut = asyncio.run_coroutine_threadsafe(self._listen(host, port, upstream),
                                                   self._loop)
            self._servers.append(fut.result())

    async def _listen(self, host: str, port: int, upstream: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._forward(reader, writer, upstream)

        return await asyncio.start_server(handle, host, port)

    async def _forward(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                       upstream: int) -> None:
        self._writers.add(c_writer)
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            # Broker set down: refuse the client the way a dead broker would.
            self._writers.discard(c_writer)
            c_writer.close()
            return
        self._writers.add(u_writer)
        try:
            # Either side closing ends the whole connection, like a real broker socket.
            pumps = [asyncio.create_task(self._pump(c_reader, u_writer)),
                     asyncio.create_task(self._pump(u_reader, c_writer))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pumps:
                task.cancel()
        finally:
            for w in (c_writer, u_writer):
                self._writers.discard(w)
                w.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_PIPE_CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close_all() -> None:
            for server in self._servers:
                server.close()
            # Server.close() leaves accepted connections open; clients must see the broker go.
            for w in list(self._writers):
                w.close()
            for server in self._servers:
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class DevBroker:
    """An in-memory Kafka cluster of ``brokers`` nodes on ``host:port`` .. ``host:port+n-1``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, brokers: int = 1,
                 partitions: int = 4) -> None:
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
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
            self._rk = self._new_owner_handle(lib)
            self._mcluster = lib.rd_kafka_mock_cluster_new(self._rk, self.brokers)
            if not self._mcluster:
                raise ServiceUnavailable("librdkafka could not create its mock cluster")
            # Default is 3 s per new group (librdkafka's mock); joins would stall far longer
            # with kafka-python's retries. Dev use wants groups to form immediately.
            lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._mcluster, 0)

            # Bootstraps are listed in broker-id order (ids are 1..n).
            mock_ports = [int(a.rsplit(":", 1)[1]) for a in
                          lib.rd_kafka_mock_cluster_bootstraps(self._mcluster).decode().split(",")]
            self._proxy = _Proxy()
            try:
                self._proxy.start([(self.host, self.port + i, up)
                                   for i, up in enumerate(mock_ports)])
            except OSError as exc:
                raise ServiceUnavailable(
                    f"dev broker cannot listen on {self.bootstrap}: {exc.strerror or exc} "
                    "(is another broker already running there? choose --port)"
                ) from exc
            for broker_id in range(1, self.brokers + 1):
                lib.rd_kafka_mock_broker_set_host_port(
                    self._mcluster, broker_id, self.host.encode(), self.port + broker_id - 1)
        except BaseException:
            self.stop()
            raise
        return self

    def _new_owner_handle(self, lib: ctypes.CDLL) -> int:
        # The mock cluster runs on a thread owned by a client handle; an idle producer will do.
        conf = lib.rd_kafka_conf_new()
        lib.rd_kafka_conf_set_log_cb(conf, _forward_librdkafka_log)
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:  # on failure conf is still ours to free
            lib.rd_kafka_conf_destroy(conf)
            raise ServiceUnavailable(f"librdkafka handle: {errstr.value.decode()}")
        return rk

    def stop(self) -> None:
        # Proxies first so clients see disconnects, then the cluster, then its owner handle.
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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
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
        lib, mc = self._cluster()
        self._check(lib.rd_kafka_mock_topic_create(mc, name.encode(),
                                                   partitions or self.partitions,
                                                   min(3, self.brokers)),
                    f"create topic {name!r}")

    def set_down(self, broker_id: int) -> None:
        """Take broker ``broker_id`` (1-based) down: connections drop, new ones are refused."""
        lib, mc = self._cluster()
        self._check(lib.rd_kafka_mock_broker_set_down(mc, broker_id), f"broker {broker_id} down")

    def set_up(self, broker_id: int) -> None:
        lib, mc = self._cluster()
        self._check(lib.rd_kafka_mock_broker_set_up(mc, broker_id), f"broker {broker_id} up")

    def push_request_errors(self, api_key: int, errors: list[int]) -> None:
        """Make the next ``len(errors)`` requests of ``api_key`` fail with these error codes."""
        lib, mc = self._cluster()
        arr = (ctypes.c_int * len(errors))(*errors)
        lib.rd_kafka_mock_push_request_errors_array(mc, api_key, len(errors), arr)


def serve(host: str, port: int, brokers: int, partitions: int, topics: list[str]) -> None:
    """Run a DevBroker until SIGINT/SIGTERM, with ``topics`` created up front."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with DevBroker(host, port, brokers, partitions) as broker:
            log.info("paperwire dev broker (in-memory, development only) on %s", broker.bootstrap)
            for topic in topics:
                broker.create_topic(topic, partitions)
                log.info("created topic %s (%d partitions)", topic, partitions)
            stop.wait()
            log.info("dev broker stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
