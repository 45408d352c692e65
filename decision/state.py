"""Where the decision service keeps its online state: entity snapshots (fraud.online), the decision of every
transaction (idempotent retries, labels) and the alert stream.

Two stores behind one interface:
- MemoryStore: in-process, the embedded default (demo, unit tests); lost when the process ends.
- RedisStore: Redis (`redis://host:6379/0`, run it with AOF on: `appendonly yes`), the production store. Several
  service processes may share it.

Every decision is two atomic writes (decision/service.py): `read_many` the entities' snapshots (watched), compute,
then `commit` the new snapshots with the pending decision records, or nothing if another writer changed one of
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
    """What a transaction (or a batch of them) read: the entities' snapshots and the decisions already recorded
    under their transaction ids."""

    values: dict  # entity -> snapshot (fraud.online) or None (new entity); entity: (kind, id), or kind for `read`
    existing: dict | None = None  # read_many: transaction id -> decision record (seen ids only); read: the record
    handle: object = None  # the store's token for `commit`
    keys: dict = field(default_factory=dict)  # entity -> the store's key


def _entity_keys(entities) -> dict:
    """(kind, id) pairs (any iterable, repeats allowed) -> their keys, in first-seen order."""
    return {e: entity_key(*e) for e in dict.fromkeys(entities)}


class _Store:
    """What both stores build on their own read_many."""

    async def read(self, entities: dict[str, str], transaction_id: str) -> Snapshot:
        """read_many for one transaction, its entities by kind (kind -> id), its one decision record."""
        snap = await self.read_many(entities.items(), [transaction_id])
        return Snapshot({kind: snap.values[(kind, key)] for kind, key in entities.items()},
                        snap.existing.get(transaction_id), snap.handle,
                        {kind: snap.keys[(kind, key)] for kind, key in entities.items()})


class MemoryStore(_Store):
    """In-process store with the same semantics as RedisStore (versions stand in for WATCH)."""

    url = "memory://"

    def __init__(self):
        self._data: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self._alerts: list[dict] = []
        self._labels: list[dict] = []

    async def read_many(self, entities, transaction_ids) -> Snapshot:
        """The snapshots of `entities` ((kind, id) pairs) and the decision records of `transaction_ids`, watched
        for `commit`."""
        keys = _entity_keys(entities)
        decisions = {t: decision_key(t) for t in dict.fromkeys(transaction_ids)}
        watched = [*keys.values(), *decisions.values()]
        existing = {t: _load(self._data[k]) for t, k in decisions.items() if k in self._data}
        return Snapshot({e: _load(self._data.get(k)) for e, k in keys.items()}, existing,
                        {k: self._versions.get(k, 0) for k in watched}, keys)

    async def commit(self, snap: Snapshot, updates: dict, records: dict) -> None:
        """The new snapshots (keyed as snap.values) and the decision records (transaction id -> record), or
        Conflict if a key read by `snap` changed meanwhile."""
        if any(self._versions.get(k, 0) != v for k, v in snap.handle.items()):
            raise Conflict()
        writes = {snap.keys[entity]: _dump(value) for entity, value in updates.items()}
        for transaction_id, record in records.items():
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


class RedisStore(_Store):
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

    async def read_many(self, entities, transaction_ids) -> Snapshot:
        """The snapshots of `entities` ((kind, id) pairs) and the decision records of `transaction_ids`: one
        WATCH and one MGET, whatever their number."""
        keys = {e: self._k(k) for e, k in _entity_keys(entities).items()}
        decisions = {t: self._k(decision_key(t)) for t in dict.fromkeys(transaction_ids)}
        pipe = self._client.pipeline(transaction=True)

        async def watch_and_get():
            await pipe.watch(*keys.values(), *decisions.values())
            return await pipe.mget(*keys.values(), *decisions.values())

        try:
            values = await self._guard(watch_and_get())
        except BaseException:
            await pipe.reset()
            raise
        existing = {t: _load(v) for t, v in zip(decisions, values[len(keys):]) if v is not None}
        return Snapshot({e: _load(v) for e, v in zip(keys, values)}, existing, pipe, keys)

    async def commit(self, snap: Snapshot, updates: dict, records: dict) -> None:
        """One MULTI/EXEC: the new snapshots (keyed as snap.values) and the decision records (transaction id ->
        record); Conflict (nothing written) if a watched key changed since `read_many`."""
        pipe = snap.handle
        try:
            pipe.multi()
            for entity, value in updates.items():
                pipe.set(snap.keys[entity], _dump(value))
            for transaction_id, record in records.items():
                pipe.set(self._k(decision_key(transaction_id)), _dump(record), ex=DECISION_TTL_S)
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
