"""Streams in and out of the decision consumer (decision/consumer.py): one small interface, two transports.

    redis://HOST:6379/0/STREAM   Redis Streams (Debian's redis-server): consumer groups, XACK
    kafka://HOST:9092/TOPIC      Apache Kafka (confluent-kafka / librdkafka): consumer groups, manual commits

Message format, the same on both: one transaction per message, its fields named after the data contract's
columns with the values as the CSV holds them (Redis: the entry's field/value pairs; Kafka: a JSON object).
Outputs (decisions, alerts, dead letters) are written the same way.

Delivery: `publish_and_ack` writes a batch's outputs and acknowledges its inputs together.
- Redis, outputs on the same server as the source: one MULTI/EXEC holds the XADDs and the XACKs, so an input is
  acknowledged exactly when its outputs exist: a crash before it re-delivers the input (the decision service
  answers a re-delivered transaction from its record: the same answer, the state untouched), a crash after it
  never re-delivers. Every transaction appears once in the decisions stream.
- Kafka (and Redis outputs on another server): the outputs are flushed first, then the offsets committed. A crash
  in between re-delivers: at least once, never skipped; the repeated decision message is identical.
"""
from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from fraud.errors import FraudError
from fraud.sources import display

REDIS_SCHEMES = ("redis", "rediss")
KAFKA_SCHEME = "kafka"
DEFAULT_GROUP = "fraud-decisions"
STREAM_MAXLEN = 1_000_000  # output streams are trimmed (approximately) beyond this many entries


class StreamError(FraudError):
    """A stream URL that cannot be used, or a transport that failed for good."""


class StreamUnavailable(FraudError):
    """The broker cannot be reached right now: nothing was acknowledged; the consumer waits and retries."""


@dataclass(frozen=True)
class Endpoint:
    """A parsed stream URL: transport, the broker (connection URL or bootstrap servers) and the stream/topic."""

    scheme: str
    broker: str  # redis: redis://host:port/db ; kafka: host:port[,host:port]
    name: str  # stream key / topic
    url: str

    @property
    def is_redis(self) -> bool:
        return self.scheme in REDIS_SCHEMES


def parse(url: str) -> Endpoint:
    """redis://HOST:PORT/DB/STREAM or kafka://HOST:PORT[,HOST:PORT]/TOPIC -> Endpoint (StreamError otherwise)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if parts.scheme in REDIS_SCHEMES:
        if len(path) != 2 or not path[0].isdigit():
            raise StreamError(f"{display(url)!r}: a Redis stream is redis://HOST:6379/DB/STREAM, e.g. "
                              "redis://127.0.0.1:6379/0/transactions")
        return Endpoint(parts.scheme, f"{parts.scheme}://{parts.netloc}/{path[0]}", path[1], url)
    if parts.scheme == KAFKA_SCHEME:
        if len(path) != 1 or not parts.netloc:
            raise StreamError(f"{display(url)!r}: a Kafka topic is kafka://HOST:9092/TOPIC, e.g. "
                              "kafka://127.0.0.1:9092/transactions")
        return Endpoint(KAFKA_SCHEME, parts.netloc, path[0], url)
    raise StreamError(f"unsupported stream {display(url)!r}: use redis://HOST:6379/DB/STREAM or "
                      "kafka://HOST:9092/TOPIC")


@dataclass
class Message:
    """One input message: its transport id (Redis entry id, Kafka partition:offset) and its fields. `error` is
    set when the message could not even be decoded (it goes to the dead letters with that reason)."""

    id: str
    fields: dict
    error: str | None = None
    _handle: object = None  # the transport's own record (Kafka: the message, for its offset)


def encode_fields(record: dict) -> dict[str, str]:
    """A record's values as stream field values: strings as they are, anything else as JSON (lists, numbers,
    booleans, null)."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}


def default_consumer_name() -> str:
    return socket.gethostname()


# ---------------------------------------------------------------------------------------------------------------
# Redis Streams
# ---------------------------------------------------------------------------------------------------------------
class RedisTransport:
    """A consumer in a Redis consumer group, plus writers for the output streams."""

    def __init__(self, source: Endpoint, *, group: str = DEFAULT_GROUP, consumer: str | None = None,
                 claim_idle_ms: int = 30_000, timeout_s: float = 5.0):
        import redis.asyncio as redis

        self.source, self.group = source, group
        self.consumer = consumer or default_consumer_name()
        self.claim_idle_ms = claim_idle_ms
        self._redis = redis
        self._timeout_s = timeout_s
        self._clients: dict[str, object] = {}
        self._pending_first = True  # after a start or a failure: this consumer's unacknowledged entries first
        self._group_ready = False

    def _client(self, broker: str):
        if broker not in self._clients:
            self._clients[broker] = self._redis.Redis.from_url(
                broker, decode_responses=True, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s)
        return self._clients[broker]

    async def _guard(self, coroutine):
        try:
            return await coroutine
        except (self._redis.ConnectionError, self._redis.TimeoutError, OSError) as exc:
            self._pending_first = True
            raise StreamUnavailable(f"Redis {display(self.source.broker)} cannot be reached ({exc})") from None
        except self._redis.ResponseError as exc:
            if str(exc).startswith(("LOADING", "BUSY ")):  # restarting with its AOF, or a long script: wait
                self._pending_first = True
                raise StreamUnavailable(f"Redis {display(self.source.broker)} is loading ({exc})") from None
            raise StreamError(f"Redis {display(self.source.broker)}: {exc}") from None

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        client = self._client(self.source.broker)

        async def create():
            try:
                await client.xgroup_create(self.source.name, self.group, id="0", mkstream=True)
            except self._redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):  # BUSYGROUP: it exists already (a restart)
                    raise
        await self._guard(create())
        self._group_ready = True

    async def read(self, count: int, block_ms: int) -> list[Message]:
        await self._ensure_group()
        client = self._client(self.source.broker)
        if self._pending_first:
            # This consumer's delivered-but-unacknowledged entries (a crash or a failed batch), then entries other
            # consumers left pending for longer than claim_idle_ms (a consumer that died).
            mine = await self._guard(client.xreadgroup(self.group, self.consumer, {self.source.name: "0"},
                                                       count=count))
            entries = mine[0][1] if mine else []
            if not entries:
                claimed = await self._guard(client.xautoclaim(self.source.name, self.group, self.consumer,
                                                              self.claim_idle_ms, "0-0", count=count))
                entries = [e for e in claimed[1] if e[1] is not None]
            if entries:
                return [Message(entry_id, dict(fields or {})) for entry_id, fields in entries]
            self._pending_first = False
        got = await self._guard(client.xreadgroup(self.group, self.consumer, {self.source.name: ">"},
                                                  count=count, block=block_ms))
        return [Message(entry_id, dict(fields or {})) for entry_id, fields in (got[0][1] if got else [])]

    async def publish_and_ack(self, outputs: list[tuple[Endpoint, dict]], acked: list[Message]) -> None:
        same, other = [], []
        for endpoint, fields in outputs:
            (same if endpoint.is_redis and endpoint.broker == self.source.broker else other).append((endpoint, fields))
        for endpoint, fields in other:  # another server: written first (at least once)
            await self._guard(self._client(endpoint.broker).xadd(
                endpoint.name, encode_fields(fields), maxlen=STREAM_MAXLEN, approximate=True))
        pipe = self._client(self.source.broker).pipeline(transaction=True)
        for endpoint, fields in same:
            pipe.xadd(endpoint.name, encode_fields(fields), maxlen=STREAM_MAXLEN, approximate=True)
        if acked:
            pipe.xack(self.source.name, self.group, *[m.id for m in acked])
        await self._guard(pipe.execute())

    async def rewind(self) -> None:
        """After a failed batch: read this consumer's unacknowledged entries again before new ones."""
        self._pending_first = True

    async def lag(self) -> int | None:
        """Entries not yet delivered to the group plus those delivered but not acknowledged (None: unknown)."""
        try:
            groups = await self._client(self.source.broker).xinfo_groups(self.source.name)
        except Exception:  # noqa: BLE001 - a metric only
            return None
        for g in groups:
            if g.get("name") == self.group:
                return int(g.get("lag") or 0) + int(g.get("pending") or 0)
        return None

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


async def redis_publish(url: str, records, *, client=None) -> int:
    """XADD each record (a dict of the contract's columns) to the stream at `url`; returns how many."""
    import redis.asyncio as redis

    endpoint = parse(url)
    own = client is None
    client = client or redis.Redis.from_url(endpoint.broker, decode_responses=True)
    n = 0
    try:
        pipe = client.pipeline(transaction=False)
        for record in records:
            pipe.xadd(endpoint.name, encode_fields(record))
            n += 1
            if n % 500 == 0:
                await pipe.execute()
        await pipe.execute()
    finally:
        if own:
            await client.aclose()
    return n


def csv_messages(data_dir, *, without_labels: bool = True) -> list[dict]:
    """A CSV folder's transactions as stream messages (the values as the CSV holds them), in event-time order."""
    from fraud import features as F
    from fraud import ingest

    raw = ingest.read_csv_dir(data_dir)
    standard = ingest.standardise(raw, require_label=False).frame
    ordered = ingest.raw_in_time_order(raw, standard).astype(object)
    if without_labels:
        ordered = ordered.drop(columns=[c for c in (F.LABEL, F.FRAUD_SCENARIO) if c in ordered.columns])
    return ordered.to_dict("records")


def publish_csv(data_dir, url: str, *, without_labels: bool = True, kafka_config: dict | None = None) -> int:
    from fraud import features as F

    records = csv_messages(data_dir, without_labels=without_labels)
    endpoint = parse(url)
    if endpoint.is_redis:
        return asyncio.run(redis_publish(url, records))
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": endpoint.broker, **(kafka_config or {})})
    for record in records:  # keyed by card: one card's transactions stay in one partition, in order
        producer.produce(endpoint.name, json.dumps(record).encode(), key=str(record.get(F.USER_ID, "")).encode())
        producer.poll(0)
    if producer.flush(60):
        raise StreamUnavailable(f"Kafka {endpoint.broker}: not every message was delivered")
    return len(records)


# ---------------------------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------------------------
class KafkaTransport:
    """A Kafka consumer in a group (auto commit off), plus a producer for the outputs. librdkafka's calls block,
    so they run in a worker thread; `config` adds librdkafka settings (e.g. test.mock.num.brokers)."""

    def __init__(self, source: Endpoint, *, group: str = DEFAULT_GROUP, consumer: str | None = None,
                 config: dict | None = None):
        from confluent_kafka import Consumer, Producer

        self.source, self.group = source, group
        common = {"bootstrap.servers": source.broker, **(config or {})}
        self._consumer = Consumer({**common, "group.id": group, "enable.auto.commit": False,
                                   "auto.offset.reset": "earliest", "client.id": consumer or default_consumer_name(),
                                   "enable.partition.eof": False})
        self._consumer.subscribe([source.name])
        self._producer = Producer({**common, "enable.idempotence": True, "linger.ms": 2})

    async def read(self, count: int, block_ms: int) -> list[Message]:
        raw = await asyncio.to_thread(self._consumer.consume, count, block_ms / 1000)
        out = []
        for m in raw:
            where = f"{m.partition()}:{m.offset()}"
            if m.error() is not None:
                if m.error().retriable():
                    raise StreamUnavailable(f"Kafka {self.source.broker}: {m.error()}")
                raise StreamError(f"Kafka {self.source.broker}: {m.error()}")
            try:
                fields = json.loads(m.value())
                if not isinstance(fields, dict):
                    raise ValueError("a message is one JSON object of the data contract's columns")
                out.append(Message(where, {str(k): "" if v is None else v if isinstance(v, str) else str(v)
                                           for k, v in fields.items()}, _handle=m))
            except (ValueError, UnicodeDecodeError) as exc:
                text = (m.value() or b"")[:200].decode("utf-8", "replace")
                out.append(Message(where, {"raw": text}, error=f"not a JSON object: {exc}", _handle=m))
        return out

    async def publish_and_ack(self, outputs: list[tuple[Endpoint, dict]], acked: list[Message]) -> None:
        from confluent_kafka import TopicPartition

        failures = []

        def delivered(err, _msg):
            if err is not None:
                failures.append(err)

        def send():
            for endpoint, fields in outputs:
                self._producer.produce(endpoint.name, json.dumps(fields).encode(), on_delivery=delivered)
            left = self._producer.flush(30)
            if left or failures:
                raise StreamUnavailable(f"Kafka {self.source.broker}: {left} output message(s) not delivered "
                                        f"({failures[:1]})")
            if acked:
                last: dict = {}
                for m in acked:
                    key = (m._handle.topic(), m._handle.partition())
                    last[key] = max(last.get(key, -1), m._handle.offset())
                self._consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()],
                                      asynchronous=False)

        await asyncio.to_thread(send)

    async def rewind(self) -> None:
        """After a failed batch: go back to the committed offsets, so the uncommitted messages come again."""
        def seek_back():
            assigned = self._consumer.assignment()
            if not assigned:
                return
            for tp in self._consumer.committed(assigned, timeout=10):
                if tp.offset >= 0:
                    self._consumer.seek(tp)
                else:  # nothing committed yet: from the beginning, as auto.offset.reset says
                    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

                    self._consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))

        try:
            await asyncio.to_thread(seek_back)
        except Exception as exc:  # noqa: BLE001 - the broker is away: the group's rebalance will rewind
            raise StreamUnavailable(f"Kafka {self.source.broker}: cannot rewind ({exc})") from None

    async def lag(self) -> int | None:
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self._consumer.close)
        await asyncio.to_thread(self._producer.flush, 10)


def open_transport(source_url: str, *, group: str = DEFAULT_GROUP, consumer: str | None = None,
                   kafka_config: dict | None = None):
    source = parse(source_url)
    if source.is_redis:
        return RedisTransport(source, group=group, consumer=consumer)
    return KafkaTransport(source, group=group, consumer=consumer, config=kafka_config)


__all__ = ["Endpoint", "KafkaTransport", "Message", "RedisTransport", "StreamError", "StreamUnavailable",
           "csv_messages", "encode_fields", "open_transport", "parse", "publish_csv", "redis_publish"]
