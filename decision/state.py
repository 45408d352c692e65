"""Where the decision service keeps its online state: entity snapshots (fraud.online), the decision of every
transaction (idempotent retries, labels) and the alert stream.

Two stores behind one interface:
- MemoryStore: in-process, the embedded default (demo, unit tests); lost when the process ends.
- RedisStore: Redis (`redis://host:6379/0`, run it with AOF on: `appendonly yes`), the production store. Several
  service processes may share it.

Every decision is two atomic writes (decision/service.py): `read` the entities' snapshots (watched), compute,
then `commit` the new snapshots with the pending decision record, or nothing if another writer changed one of
those keys in between (then the service computes again on the new state); after the model call, `complete`
writes the answer and the alert unless the record already has an answer. So two processes on one Redis answer
as one process would, a retried transaction id gets the first decision back, and a crash leaves nothing
half-written.
"""
from __future__ import annotations

import json

import orjson
from dataclasses import dataclass, field

from fraud.errors import FraudError
from fraud.sources import display  # URLs without their password

DECISION_TTL_S = 120 * 24 * 3600  # a decision record (idempotency, labels) outlives the label window


class StateUnavailable(FraudError):
    """The state store cannot be reached: the service answers 503 and changes nothing."""


class Conflict(Exception):
    """Another writer changed a key read by this transaction: compute again."""


@dataclass
class Snapshot:
    """What a transaction read: the entities' snapshots and, if the transaction id was seen, its decision."""

    values: dict  # kind -> snapshot (fraud.online) or None (new entity)
    existing: dict | None = None
    handle: object = None  # the store's token for `commit`
    keys: dict = field(default_factory=dict)


class MemoryStore:
    """In-process store with the same semantics as RedisStore (versions stand in for WATCH)."""

    url = "memory://"

    def __init__(self):
        self._data: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self._alerts: list[dict] = []
        self._labels: list[dict] = []

    async def read(self, entities: dict[str, str], transaction_id: str) -> Snapshot:
        keys = {kind: entity_key(kind, key) for kind, key in entities.items()}
        decision = self._data.get(decision_key(transaction_id))
        watched = [*keys.values(), decision_key(transaction_id)]
        return Snapshot({kind: _load(self._data.get(k)) for kind, k in keys.items()},
                        _load(decision),
                        {k: self._versions.get(k, 0) for k in watched}, keys)

    async def commit(self, snap: Snapshot, updates: dict, record: dict | None, transaction_id: str | None) -> None:
        """The new snapshots and the decision record, or Conflict if a key read by `snap` changed meanwhile."""
        if any(self._versions.get(k, 0) != v for k, v in snap.handle.items()):
            raise Conflict()
        writes = {snap.keys[kind]: _dump(value) for kind, value in updates.items()}
        if record is not None:
            writes[decision_key(transaction_id)] = _dump(record)
        for key, value in writes.items():
            self._data[key] = value
            self._versions[key] = self._versions.get(key, 0) + 1

    async def complete(self, transaction_id: str, record: dict, alert: dict | None) -> dict | None:
        """Atomically: unless the transaction's record already has an answer (then return that record and write
        nothing), write the completed record and the alert."""
        key = decision_key(transaction_id)
        current = _load(self._data.get(key))
        if current is not None and "response" in current:
            return current
        self._data[key] = _dump(record)
        self._versions[key] = self._versions.get(key, 0) + 1
        if alert is not None:
            self._alerts.append(alert)
        return None

    async def complete_many(self, writes: list[tuple[str, dict, dict | None]]) -> list[dict | None]:
        """`complete` for each (transaction id, record, alert), in order."""
        return [await self.complete(*write) for write in writes]

    async def get_decision(self, transaction_id: str) -> dict | None:
        value = self._data.get(decision_key(transaction_id))
        return _load(value)

    async def add_label(self, label: dict) -> None:
        self._labels.append(label)

    def load(self, snapshots: dict) -> None:
        """Seed entity snapshots ((kind, id) -> snapshot), e.g. folded from history (decision/replay.py)."""
        for (kind, key), snapshot in snapshots.items():
            self._data[entity_key(kind, key)] = _dump(snapshot)

    async def alerts(self, count: int = 1000) -> list[dict]:
        return self._alerts[-count:]

    async def labels(self, count: int = 100_000) -> list[dict]:
        return self._labels[-count:]

    async def release(self, snap: Snapshot) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


_COMPLETE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and record['response'] ~= nil then return current end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '1000000', '*', unpack(cjson.decode(ARGV[3])))
end
return false
"""


class RedisStore:
    """Redis: snapshots as JSON strings, WATCH/MULTI/EXEC per state update, a Lua script (one round trip) to
    complete a decision, alerts and labels as streams."""

    def __init__(self, url: str, *, timeout_s: float = 0.5, prefix: str = "fraud"):
        import redis.asyncio as redis

        self.url = url
        self.prefix = prefix
        self._redis = redis
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            max_connections=256, decode_responses=True)
        self._complete = self._client.register_script(_COMPLETE_LUA)

    def _k(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    async def _guard(self, coroutine):
        try:
            return await coroutine
        except self._redis.WatchError:
            raise Conflict() from None
        except (self._redis.ConnectionError, self._redis.TimeoutError, OSError) as exc:
            raise StateUnavailable(f"the state store {display(self.url)} cannot be reached ({exc}); nothing was "
                                   "changed: retry, or check that Redis is running") from None

    async def read(self, entities: dict[str, str], transaction_id: str) -> Snapshot:
        keys = {kind: self._k(entity_key(kind, key)) for kind, key in entities.items()}
        pipe = self._client.pipeline(transaction=True)

        async def watch_and_get():
            await pipe.watch(*keys.values(), self._k(decision_key(transaction_id)))
            values = await pipe.mget(*keys.values(), self._k(decision_key(transaction_id)))
            return values

        try:
            values = await self._guard(watch_and_get())
        except BaseException:
            await pipe.reset()
            raise
        decision = values[-1]
        return Snapshot({kind: _load(v) for kind, v in zip(keys, values[:-1])},
                        _load(decision), pipe, keys)

    async def commit(self, snap: Snapshot, updates: dict, record: dict | None, transaction_id: str | None) -> None:
        pipe = snap.handle
        try:
            pipe.multi()
            for kind, value in updates.items():
                pipe.set(snap.keys[kind], _dump(value))
            if record is not None:
                pipe.set(self._k(decision_key(transaction_id)), _dump(record),
                         ex=DECISION_TTL_S)
            await self._guard(pipe.execute())
        finally:
            await pipe.reset()

    def _complete_args(self, transaction_id: str, record: dict, alert: dict | None) -> dict:
        fields = [] if alert is None else [part for k, v in alert.items() for part in (k, json.dumps(v))]
        return dict(keys=[self._k(decision_key(transaction_id)), self._k("alerts")],
                    args=[_dump(record), DECISION_TTL_S, json.dumps(fields) if fields else ""])

    async def complete(self, transaction_id: str, record: dict, alert: dict | None) -> dict | None:
        current = await self._guard(self._complete(**self._complete_args(transaction_id, record, alert)))
        return _load(current) if current else None

    async def complete_many(self, writes: list[tuple[str, dict, dict | None]]) -> list[dict | None]:
        """`complete` for each (transaction id, record, alert), in one round trip (each write is still its own
        atomic script)."""
        pipe = self._client.pipeline(transaction=False)  # it loads the script first if the server lacks it
        for write in writes:
            await self._complete(**self._complete_args(*write), client=pipe)
        currents = await self._guard(pipe.execute())
        return [_load(c) if c else None for c in currents]

    async def release(self, snap: Snapshot) -> None:
        if snap.handle is not None:
            await snap.handle.reset()

    async def get_decision(self, transaction_id: str) -> dict | None:
        value = await self._guard(self._client.get(self._k(decision_key(transaction_id))))
        return _load(value)

    async def add_label(self, label: dict) -> None:
        await self._guard(self._client.xadd(self._k("labels"), {k: str(v) for k, v in label.items()}))

    async def alerts(self, count: int = 1000) -> list[dict]:
        entries = list(reversed(await self._guard(self._client.xrevrange(self._k("alerts"), count=count))))
        return [{k: json.loads(v) for k, v in fields.items()} for _, fields in entries]

    async def labels(self, count: int = 100_000) -> list[dict]:
        entries = await self._guard(self._client.xrange(self._k("labels"), count=count))
        return [dict(fields) for _, fields in entries]

    async def ping(self) -> None:
        await self._guard(self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()


def entity_key(kind: str, key: str) -> str:
    return f"{kind}:{key}"


def decision_key(transaction_id: str) -> str:
    return f"decision:{transaction_id}"


def _dump(value) -> bytes:
    return orjson.dumps(value)  # several times faster than json for the snapshots read on every decision


def _load(value: str | bytes | None) -> dict | None:
    return None if value is None else orjson.loads(value)


def open_store(url: str | None):
    """memory:// (or nothing): the embedded store; redis://...: Redis."""
    if not url or url.startswith("memory:"):
        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise FraudError(f"unsupported state store {display(url)!r}: use memory:// or redis://HOST:6379/0")
