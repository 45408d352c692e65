"""The decision path for one raw transaction: standardise (fraud.ingest), behavioural features from the online
state (fraud.online over fraud.behaviour), one gRPC Predict to TF Serving with a deadline, the policy
(fraud.decisions), then the state update, the decision record and the alert in one atomic write.

    service = DecisionService(DecisionOptions(serving="127.0.0.1:8500"))
    decision = await service.decide({"transaction_id": "t1", "timestamp": "...", "amount": "120", ...})

The HTTP front end is decision/http.py; `fraudctl decide serve` runs it.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from fraud import behaviour as B
from fraud import decisions as D
from fraud import features as F
from fraud import ingest, online
from fraud.errors import DataContractError, FraudError

from decision import metrics as M
from decision.state import Conflict, StateUnavailable, open_store

log = logging.getLogger("decision")
DEFAULT_REVIEW_THRESHOLD = 0.5  # only when the served version ships no threshold and none is given
MAX_CONFLICT_RETRIES = 100  # a hot card or restaurant under concurrent decisions: retry with a short back-off


@dataclass(frozen=True)
class DecisionOptions:
    serving: str  # TF Serving gRPC target host:port (grpc:// prefix accepted)
    state: str | None = None  # memory:// (default) or redis://host:6379/0
    model_name: str = F.MODEL_NAME
    model_dir: Path | None = None  # <serving-dir>/<model>: thresholds shipped with each version
    review_threshold: float | None = None  # overrides the shipped operating threshold
    decline_threshold: float | None = None  # overrides the shipped decline threshold
    rules_file: Path | None = None
    deadline_ms: float = 150.0  # the model call's deadline; beyond it the answer is degraded (rules only)
    canary_label: str | None = None  # also score with this version label in the shadow (never decides)
    labels_db: str | None = None  # the pipeline's database source (SQLAlchemy URL): labels are appended to it
    alert_webhook: str | None = None  # every alert is also POSTed here (JSON), after the decision is answered
    # TLS to a model server started with --ssl-config-file: the CA that signed it, and this service's own
    # certificate and key when the server verifies clients (PEM files).
    serving_ca: Path | None = None
    serving_cert: Path | None = None
    serving_key: Path | None = None


class BadTransaction(DataContractError):
    """A transaction that breaks the data contract: HTTP 422 naming the field; the state is not touched."""


def _raw_record(transaction) -> dict:
    if not isinstance(transaction, dict):
        raise BadTransaction("a transaction is a JSON object of the data contract's columns")
    raw = {}
    for key, value in transaction.items():
        if isinstance(value, (dict, list)):
            raise BadTransaction(f"field {key!r}: expected a single value, got {type(value).__name__}")
        raw[str(key)] = "" if value is None else str(value)
    raw.pop(F.LABEL, None)  # a live transaction has no label; labels arrive through /v1/labels
    return raw


def standardise(transaction) -> tuple[dict, B.Event]:
    """One raw transaction (data-contract columns, values as the CSV holds them) -> its standardised row and
    event, by fraud.ingest's rules exactly as training data goes (standardise_record, tested equal to the frame
    path); BadTransaction naming the field otherwise."""
    raw = _raw_record(transaction)
    try:
        row = ingest.standardise_record(raw)
    except DataContractError as exc:
        raise BadTransaction(str(exc)) from None
    return row, B.event_of(row)


def model_request(row: dict, features: dict, input_names, model_name: str, label: str | None = None):
    """A PredictRequest of one transaction: raw inputs from the standardised row, behavioural ones computed."""
    return model_request_many([(row, features)], input_names, model_name, label)


def model_request_many(items, input_names, model_name: str, label: str | None = None):
    """A PredictRequest of several transactions ((row, features) each), one row of every input per transaction."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = F.SERVING_SIGNATURE
    if label:
        request.model_spec.version_label = label
    for name in input_names:
        values = [features[name] if name in features else row[name] for row, features in items]
        proto = request.inputs[name]
        proto.tensor_shape.dim.add(size=len(items))
        kind = F.input_kind(name)
        if kind == "string":
            proto.dtype = types_pb2.DT_STRING
            proto.string_val.extend(str(v).encode() for v in values)
        elif kind == "int":
            proto.dtype = types_pb2.DT_INT64
            proto.int64_val.extend(int(v) for v in values)
        else:
            proto.dtype = types_pb2.DT_FLOAT
            proto.float_val.extend(float(v) for v in values)
    return request


class ModelClient:
    """TF Serving's PredictionService over one reused gRPC channel, a deadline on every call."""

    def __init__(self, target: str, model_name: str, deadline_s: float, *, ssl_ca: bytes | None = None,
                 ssl_cert: bytes | None = None, ssl_key: bytes | None = None):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target = target.removeprefix("grpc://")
        self.model_name = model_name
        self.deadline_s = deadline_s
        self._grpc = grpc
        if ssl_ca is not None:
            self._channel = grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(
                root_certificates=ssl_ca, private_key=ssl_key, certificate_chain=ssl_cert))
        else:
            self._channel = grpc.aio.insecure_channel(self.target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.input_names: tuple[str, ...] | None = None

    async def inputs(self) -> tuple[str, ...]:
        """The served signature's input names (GetModelMetadata), cached."""
        if self.input_names is None:
            from tensorflow_serving.apis import get_model_metadata_pb2

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            request.model_spec.name = self.model_name
            response = await self._stub.GetModelMetadata(request, timeout=self.deadline_s)
            defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(defs)
            self.input_names = tuple(sorted(defs.signature_def[F.SERVING_SIGNATURE].inputs))
        return self.input_names

    async def score_many(self, items, label: str | None = None) -> tuple[list[float], int]:
        """One Predict for several transactions ((row, features) each): their scores, in order, and the version."""
        names = await self.inputs()
        request = model_request_many(items, names, self.model_name, label)
        response = await self._stub.Predict(request, timeout=self.deadline_s)
        return _floats(response.outputs[F.SCORE_OUTPUT], len(items)), int(response.model_spec.version.value)

    def is_unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, (self._grpc.aio.AioRpcError, asyncio.TimeoutError))

    async def close(self) -> None:
        await self._channel.close()


def _floats(proto, n: int) -> list[float]:
    """The first n values of a float TensorProto, whichever encoding the server chose (TF Serving:
    tensor_content); one score per row for a [n] or [n, 1] output."""
    if proto.float_val:
        values = [float(v) for v in proto.float_val[:n]]
    else:
        import numpy as np

        values = np.frombuffer(proto.tensor_content, dtype=np.float32, count=n).tolist()
    if len(values) != n:
        raise FraudError(f"the model answered {len(values)} score(s) for {n} transaction(s)")
    return values


class _EntityLocks:
    """One asyncio lock per entity in this process: concurrent decisions on one card or restaurant wait for each
    other here instead of conflicting in the store and computing again (other processes: the store's WATCH)."""

    def __init__(self):
        self._locks: dict = {}

    def hold(self, entities):
        """Hold the locks of `entities` ((kind, id) pairs, repeats allowed)."""
        import contextlib

        keys = sorted(set(entities))  # one global order: no deadlock

        @contextlib.asynccontextmanager
        async def held():
            counted, acquired = [], []
            try:
                for key in keys:
                    entry = self._locks.setdefault(key, [asyncio.Lock(), 0])
                    entry[1] += 1
                    counted.append(key)
                    await entry[0].acquire()
                    acquired.append(key)
                yield
            finally:
                for key in reversed(acquired):
                    self._locks[key][0].release()
                for key in counted:
                    entry = self._locks[key]
                    entry[1] -= 1
                    if entry[1] == 0:
                        del self._locks[key]
        return held()


class AlertWebhook:
    """POSTs each alert (JSON) to a URL in the background: the decision never waits for it and a slow or failing
    receiver never fails a decision. At most MAX_IN_FLIGHT posts at once (more are dropped and counted); each
    post has a timeout. The alert stream (store) stays the record; the webhook is the push."""

    MAX_IN_FLIGHT = 256

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url, self.timeout_s = url, timeout_s
        self._session = None
        self._tasks: set = set()

    def send(self, alert: dict) -> None:
        if len(self._tasks) >= self.MAX_IN_FLIGHT:
            M.WEBHOOK.labels(result="dropped").inc()
            log.warning("alert webhook: %d posts in flight, alert %s dropped (it is in the alert stream)",
                        len(self._tasks), alert.get("transaction_id"))
            return
        task = asyncio.get_running_loop().create_task(self._post(alert))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, alert: dict) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        try:
            async with self._session.post(self.url, json=alert) as response:
                if response.status >= 300:
                    raise OSError(f"HTTP {response.status}")
            M.WEBHOOK.labels(result="sent").inc()
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            M.WEBHOOK.labels(result="failed").inc()
            log.warning("alert webhook %s: %s failed: %s", self.url, alert.get("transaction_id"), _short(exc))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout_s)
        if self._session is not None:
            await self._session.close()


class DecisionService:
    def __init__(self, options: DecisionOptions, *, store=None, model=None):
        self.options = options
        self.store = store if store is not None else open_store(options.state)
        if model is None:
            def pem(path):
                return Path(path).read_bytes() if path else None

            model = ModelClient(options.serving, options.model_name, options.deadline_ms / 1000,
                                ssl_ca=pem(options.serving_ca), ssl_cert=pem(options.serving_cert),
                                ssl_key=pem(options.serving_key))
        self.model = model
        self.rules = D.load_rules(options.rules_file)
        self._thresholds: dict[int, D.Thresholds] = {}
        self._locks = _EntityLocks()
        self.webhook = AlertWebhook(options.alert_webhook) if options.alert_webhook else None

    # ------------------------------------------------------------------------------------------
    def thresholds(self, version: int | None) -> D.Thresholds:
        """The version's shipped operating (review) and decline thresholds, unless overridden; read once per
        version."""
        if version is not None and version in self._thresholds:
            return self._thresholds[version]
        review, decline = self.options.review_threshold, self.options.decline_threshold
        shipped = None
        if (review is None or decline is None) and version is not None and self.options.model_dir is not None:
            from fraud.threshold import read_threshold

            version_dir = str(Path(self.options.model_dir) / str(version))
            try:
                shipped = read_threshold(version_dir)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable operating threshold in %s (%s)", version_dir, exc)
        if review is None and shipped is not None:
            review = shipped.threshold
        if review is None:
            review = DEFAULT_REVIEW_THRESHOLD
            log.warning("no operating threshold known for version %s: reviewing above %.2f; give --model-dir "
                        "(the serving dir) or --review-threshold", version, review)
        if decline is None and shipped is not None and shipped.decline_precision_target is not None:
            decline = shipped.decline_threshold  # chosen by the pipeline for its precision target
        if decline is None:
            decline = D.DEFAULT_DECLINE_THRESHOLD
        found = D.Thresholds(review=review, decline=max(decline, review))
        if version is not None:
            self._thresholds[version] = found
        return found

    async def decide(self, transaction: dict) -> dict:
        """The decision for one raw transaction (see decide_standardised)."""
        row, event = standardise(transaction)
        return await self.decide_standardised(row, event)

    async def decide_standardised(self, row: dict, event: B.Event) -> dict:
        """Two steps, so that a busy restaurant or card waits only for the state, never for a model call:
        1. under the entities' locks (other processes: the store's WATCH): read the snapshots, compute the
           features, and write the updated snapshots with a *pending* decision record holding the features, in
           one atomic commit. The next transaction of the same card or restaurant can start right after it.
        2. without them: score, decide, and complete the decision record (and the alert) in one atomic commit.
        A crash between the two leaves a pending record: a retry of the same transaction id scores the stored
        features and completes it (the state is never updated twice); a retry after step 2 gets the answer.
        The stream consumer takes the same two steps for a batch at a time (record_many, score_many, answer_many).
        """
        started = time.perf_counter()
        pending = await self.record(row, event)
        answer = await self.answer(row, event, pending)
        M.DECISION_LATENCY.observe(time.perf_counter() - started)
        return answer

    async def record(self, row: dict, event: B.Event) -> dict:
        """Step 1 alone: the decision record, pending (features computed, the state updated) or the complete one
        of an earlier attempt. A transaction is a batch of one."""
        return (await self.record_many([(row, event)]))[0]

    async def record_many(self, items: list[tuple[dict, B.Event]], *, observe=None) -> list[dict]:
        """Step 1 for several transactions ((row, event) each), taken in their order as if one after the other:
        one read of every snapshot and decision record they touch, the features of each computed on the state
        the earlier ones left, and one atomic commit of the new snapshots and the pending records. If another
        writer changed one of those keys meanwhile, nothing is written and the whole batch is computed again.
        `observe(row, event, features)`, if given, sees each transaction recorded for the first time (the stream
        consumer's drift window)."""
        entities = [entity for _, event in items for entity in online.entity_ids(event).items()]
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                async with self._locks.hold(entities):
                    records, fresh = await self._record_events(items, entities)
                break
            except Conflict:
                M.STATE_CONFLICTS.inc()
                await asyncio.sleep(random.uniform(0, min(0.0005 * (attempt + 1), 0.01)))
        else:
            first = items[0][1].transaction_id if items else ""
            raise StateUnavailable(f"transaction {first}{f' and {len(items) - 1} more' if len(items) > 1 else ''}: "
                                   f"the state kept changing under {MAX_CONFLICT_RETRIES} attempts; retry")
        if observe is not None:
            for (row, event), record, new in zip(items, records, fresh):
                if new:
                    observe(row, event, record["features"])
        return records

    async def _record_events(self, items: list[tuple[dict, B.Event]], entities: list) -> tuple[list[dict], list[bool]]:
        """record_many's one attempt (`entities`: every (kind, id) the items touch): the decision records, and
        whether each is new (False: seen before, decided or pending after a crash, or repeated within the batch)."""
        began = time.perf_counter()
        snap = await self.store.read_many(entities, [event.transaction_id for _, event in items])
        M.STATE_LATENCY.observe(time.perf_counter() - began)
        try:
            state = dict(snap.values)  # (kind, id) -> snapshot, as the transactions so far left it
            changed, records, out, fresh = set(), {}, [], []
            in_order = []  # (record, event) of the transactions not late: their features in one call, below
            for _, event in items:
                seen = records.get(event.transaction_id) or snap.existing.get(event.transaction_id)
                if seen is not None:
                    out.append(seen)
                    fresh.append(False)
                    continue
                entities = online.entity_ids(event).items()
                snapshots = {kind: state[(kind, key)] for kind, key in entities if state[(kind, key)] is not None}
                late = online.is_late(snapshots, event)
                record = {"restaurant_id": event.restaurant_id, "user_id": event.user_id, "time": event.time,
                          "late": late, "features": None}
                if late:  # scored on the state as it is now, not added to it
                    record["features"] = online.features(snapshots, event)
                else:
                    in_order.append((record, event))
                    for kind, key in entities:
                        state[(kind, key)] = online.append(kind, state[(kind, key)] or online.empty(kind), event)
                        changed.add((kind, key))
                records[event.transaction_id] = record
                out.append(record)
                fresh.append(True)
            computed = online.features_many(snap.values, [event for _, event in in_order])
            for (record, _), features in zip(in_order, computed):
                record["features"] = features
        except BaseException:
            await self.store.release(snap)
            raise
        began = time.perf_counter()
        await self.store.commit(snap, {entity: state[entity] for entity in changed}, records)
        M.STATE_LATENCY.observe(time.perf_counter() - began)
        return out, fresh

    async def answer(self, row: dict, event: B.Event, pending: dict, scored: tuple | None = None) -> dict:
        """Step 2 alone: the answer of a recorded transaction (`scored`: its model result, if already known)."""
        if "response" in pending:  # a retry of a decided transaction: the first answer, nothing changed
            return {**pending["response"], "replayed": True}
        return await self._complete(row, event, pending, scored)

    async def score_many(self, items: list[tuple[dict, dict]]) -> list[tuple]:
        """The model results ((score, version, degraded, shadow), as _score gives them) of several recorded
        transactions ((row, features) each) from one Predict call: what the stream consumer does per batch."""
        if not items:
            return []
        began = time.perf_counter()
        try:
            scores, version = await asyncio.wait_for(self.model.score_many(items), self.options.deadline_ms / 1000)
        except Exception as exc:  # noqa: BLE001 - any failure of the model call degrades, never fails
            self._log_model_failure(exc)
            return [(None, None, True, None)] * len(items)
        finally:
            M.MODEL_LATENCY.observe(time.perf_counter() - began)
        shadows = [None] * len(items)
        if self.options.canary_label:
            label = self.options.canary_label
            try:
                canary, canary_version = await asyncio.wait_for(self.model.score_many(items, label),
                                                                self.options.deadline_ms / 1000)
                shadows = [{"label": label, "score": round(c, 6), "model_version": canary_version} for c in canary]
            except Exception as exc:  # noqa: BLE001 - the shadow never affects the decision
                shadows = [{"label": label, "error": _short(exc)}] * len(items)
        return [(score, version, False, shadow) for score, shadow in zip(scores, shadows)]

    async def _complete(self, row: dict, event: B.Event, pending: dict, scored: tuple | None = None) -> dict:
        """Step 2: score the recorded features, decide, and write the answer and the alert, once."""
        if scored is None:
            scored = await self._score(row, pending["features"])
        response, alert = self._outcome(event, pending, scored)
        began = time.perf_counter()
        first = await self.store.complete(event.transaction_id, {**pending, "response": response}, alert)
        M.STATE_LATENCY.observe(time.perf_counter() - began)
        return self._completed(response, alert, first)

    async def answer_many(self, items: list[tuple[B.Event, dict, tuple]]) -> list[dict]:
        """Step 2 for several recorded transactions ((event, pending record, model result) each), their answers
        and alerts written in one round trip to the store: the stream consumer's batch."""
        answers: list = [None] * len(items)
        writes, where = [], []
        for k, (event, pending, scored) in enumerate(items):
            if "response" in pending:
                answers[k] = {**pending["response"], "replayed": True}
                continue
            response, alert = self._outcome(event, pending, scored)
            writes.append((event.transaction_id, {**pending, "response": response}, alert))
            where.append((k, response, alert))
        began = time.perf_counter()
        firsts = await self.store.complete_many(writes) if writes else []
        M.STATE_LATENCY.observe(time.perf_counter() - began)
        for (k, response, alert), first in zip(where, firsts):
            answers[k] = self._completed(response, alert, first)
        return answers

    def _outcome(self, event: B.Event, pending: dict, scored: tuple) -> tuple[dict, dict | None]:
        """The answer and the alert (None when approved) of a recorded, scored transaction."""
        features, late = pending["features"], pending["late"]
        score, version, degraded, shadow = scored
        thresholds = self.thresholds(version)
        hits = D.rule_hits(self.rules, user_id=event.user_id, device_id=event.device_id, city=event.city,
                           amount_pen=event.amount_pen)
        outcome = D.decide(score, thresholds, hits, amount_pen=event.amount_pen, rules=self.rules)
        reasons = [reason for _, reason in hits] + (D.reasons(features) if outcome != D.APPROVE else [])
        if degraded:
            reasons.append("degraded: the model could not be reached in time; rules and amount policy only")
        response = {"transaction_id": event.transaction_id, "decision": outcome,
                    "score": None if score is None else round(score, 6), "model_version": version,
                    "reasons": reasons, "thresholds": thresholds.as_dict(), "degraded": degraded}
        if late:
            response["late"] = ("older than the newest event of its card, device or restaurant: scored on the "
                                "current state, not added to it")
        if shadow is not None:
            response["shadow"] = shadow
        alert = None
        if outcome != D.APPROVE:
            alert = {"transaction_id": event.transaction_id, "decision": outcome, "score": response["score"],
                     "model_version": version, "reasons": reasons, "user_id": event.user_id,
                     "restaurant_id": event.restaurant_id, "time": event.time, "degraded": degraded}
        return response, alert

    def _completed(self, response: dict, alert: dict | None, first: dict | None) -> dict:
        """After the store's write: the answer (the first one if a concurrent retry won), metrics, the webhook."""
        if first is not None:  # a concurrent retry completed it first: its answer, nothing written
            return {**first["response"], "replayed": True}
        M.DECISIONS.labels(decision=response["decision"], model_version=str(response["model_version"])).inc()
        if response["score"] is not None:
            M.SCORES.observe(response["score"])
        if response["degraded"]:
            M.DEGRADED.inc()
        if alert is not None:
            M.ALERTS.labels(decision=response["decision"]).inc()
            if self.webhook is not None:
                self.webhook.send(alert)
        return response

    async def _score(self, row: dict, features: dict):
        """(score, version, degraded, shadow): degraded when the model is unreachable within the deadline."""
        return (await self.score_many([(row, features)]))[0]

    def _log_model_failure(self, exc: BaseException) -> None:
        if not (self.model.is_unavailable(exc) or isinstance(exc, (OSError, FraudError))):
            log.error("model call failed", exc_info=exc)
        else:
            log.warning("model call failed, degraded answer: %s", _short(exc))
        M.MODEL_ERRORS.inc()

    async def label(self, transaction_id: str, is_fraudulent, reported_at: str | None = None) -> dict:
        """Record a chargeback (1) or a confirmation (0) for a decided transaction: the card's and the
        restaurant's fraud rates use it once it is older than the label delay, as in training; it is also kept
        for the next training."""
        if is_fraudulent not in (0, 1, True, False, "0", "1"):
            raise BadTransaction("field 'is_fraudulent' must be 0 or 1")
        value = int(is_fraudulent)
        written = False
        for _ in range(MAX_CONFLICT_RETRIES):
            record = await self.store.get_decision(transaction_id)
            if record is None:
                raise LookupError(f"transaction {transaction_id!r} was never decided by this service")
            if self.options.labels_db and not written:  # first the database: a failure changes nothing
                from fraud import sql_source

                await asyncio.to_thread(sql_source.append_labels, self.options.labels_db, [
                    {"transaction_id": transaction_id, F.LABEL: value, "reported_at": reported_at}])
                written = True
            # The card's and the restaurant's delayed fraud rates both use it.
            ids = {kind: record.get(f"{kind}_id") for kind in online.LABELLED_KINDS if record.get(f"{kind}_id")}
            updates = {}
            if ids:
                snap = await self.store.read(ids, f"label:{transaction_id}")
                try:
                    for kind in ids:
                        updated, kept = online.with_label(snap.values.get(kind) or online.empty(kind),
                                                          transaction_id, value)
                        if kept:
                            updates[kind] = updated
                except BaseException:
                    await self.store.release(snap)
                    raise
                try:
                    await self.store.commit(snap, updates, {})
                except Conflict:
                    continue
            applied = bool(updates)
            await self.store.add_label({"transaction_id": transaction_id, F.LABEL: value,
                                        "reported_at": reported_at or "", "event_time": record.get("time", "")})
            M.LABELS.labels(is_fraudulent=str(value)).inc()
            return {"transaction_id": transaction_id, F.LABEL: value, "applied_to_state": applied,
                    "written_to_database": written}
        raise StateUnavailable(f"label for {transaction_id}: the state kept changing; retry")

    async def close(self) -> None:
        if self.webhook is not None:
            await self.webhook.close()
        await self.store.close()
        await self.model.close()


def _short(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return f"{type(exc).__name__}: {text}"[:300]


__all__ = ["BadTransaction", "DecisionOptions", "DecisionService", "ModelClient", "standardise"]
