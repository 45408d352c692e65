"""The stream consumer behind `fraudctl decide consume`: transactions from a stream, decided by the same code
path as POST /v1/decisions (DecisionService: same state, same model call, same reasons), decisions and alerts
written to output streams, invalid events to a dead-letter stream with the reason, decided transactions landed
as hourly training files, and the last hour's drift against training exported as Prometheus gauges.

One batch at a time (decision/stream.py has the delivery rules):
1. read up to `batch` messages (after a start or a failure: the ones delivered but not acknowledged first);
2. check each against the data contract and the curated schema; record the valid ones concurrently (features
   from the state, the state updated: each card, device and restaurant in message order), score them all with
   one Predict call, and write their answers and alerts to the state in one round trip;
3. append the decided transactions to the landing staging files (fsynced);
4. write the decisions, alerts and dead letters and acknowledge the batch, in one transaction on Redis.
If the broker or the state store goes away anywhere in 1-4, nothing of the batch is acknowledged; the consumer
waits (backing off up to 5 s) and does the batch again: transactions already decided are answered from their
decision records, so they are written once and the state is updated once.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fraud import behaviour as B
from fraud import decisions as D
from fraud import features as F
from fraud.errors import DataContractError
from fraud.landing import Landing, labels_by_transaction
from fraud.settings import DEFAULT_SCHEMA_FILE
from fraud.stream_quality import WINDOW_S, DriftWindow, RecordChecks, read_schema, read_statistics

from decision import metrics as M
from decision import stream as S
from decision.service import DecisionOptions, DecisionService, standardise
from decision.state import StateUnavailable

log = logging.getLogger("decision.consumer")
DEAD_LETTER_SUFFIX = "-dead-letters"
MAX_BACKOFF_S = 5.0
DRIFT_EVERY_S = 5.0  # the drift gauges are recomputed at most this often


@dataclass(frozen=True)
class ConsumerOptions:
    source: str  # redis://HOST:6379/DB/STREAM or kafka://HOST:9092/TOPIC
    decisions: str
    alerts: str | None = None
    dead_letters: str | None = None  # default: the source's name + "-dead-letters", on the same broker
    group: str = S.DEFAULT_GROUP
    consumer: str | None = None  # default: the host name
    batch: int = 100
    block_ms: int = 100
    landing: Path | None = None
    label_delay_days: int = F.LABEL_DELAY_DAYS
    schema_file: Path = DEFAULT_SCHEMA_FILE
    training_stats: Path | None = None  # FeatureStats.pb or a pipeline root: drift gauges need it
    drift_window_s: int = WINDOW_S  # event time the drift gauges look back over
    idle_exit_s: float | None = None  # stop after this long without a message (demo, tests)
    kafka_config: dict | None = None  # extra librdkafka settings (tests: the mock cluster)


def dead_letter_url(options: ConsumerOptions) -> str:
    if options.dead_letters:
        return options.dead_letters
    source = S.parse(options.source)
    return source.url.rsplit("/", 1)[0] + "/" + source.name + DEAD_LETTER_SUFFIX


def _redis_entry_seconds(entry_id: str) -> float | None:
    """A Redis entry id's time (milliseconds before the dash): when the transaction entered the stream."""
    head = entry_id.split("-", 1)[0]
    return int(head) / 1000 if head.isdigit() and "-" in entry_id else None


def decision_message(response: dict) -> dict:
    """What the decisions stream carries for one transaction."""
    return {"transaction_id": response["transaction_id"], "decision": response["decision"],
            "score": response["score"], "model_version": response["model_version"],
            "reasons": response["reasons"], "degraded": bool(response["degraded"])}


def alert_message(response: dict, event: B.Event) -> dict:
    return {**decision_message(response), "user_id": event.user_id, "restaurant_id": event.restaurant_id,
            "time": event.time}


class Consumer:
    def __init__(self, options: ConsumerOptions, decision_options: DecisionOptions, *, service=None,
                 transport=None):
        self.options = options
        self.decisions = S.parse(options.decisions)
        self.alerts = S.parse(options.alerts) if options.alerts else None
        self.dead_letters = S.parse(dead_letter_url(options))
        source = S.parse(options.source)
        for name, out in (("--decisions", self.decisions), ("--alerts", self.alerts),
                          ("--dead-letters", self.dead_letters)):
            if out is not None and out.is_redis != source.is_redis:
                raise S.StreamError(f"{name} {S.display(out.url)!r} must use the source's transport "
                                    f"({'Redis' if source.is_redis else 'Kafka'})")
        schema = read_schema(options.schema_file)
        self.checks = RecordChecks.from_schema(schema)
        self.drift = DriftWindow(schema, read_statistics(options.training_stats), window_s=options.drift_window_s) \
            if options.training_stats else None
        if self.drift is not None:
            for name, ref in self.drift.references.items():
                M.FEATURE_DRIFT_LIMIT.labels(feature=name).set(ref.limit)
        self.landing = Landing(options.landing, label_delay_days=options.label_delay_days) if options.landing \
            else None
        self.service = service if service is not None else DecisionService(decision_options)
        self.transport = transport if transport is not None else S.open_transport(
            options.source, group=options.group, consumer=options.consumer, kafka_config=options.kafka_config)
        self.watermark: int | None = None
        self.counts = {"decided": 0, "replayed": 0, "dead_letter": 0}
        self._drift_at = 0.0
        self._landing_hour = None

    # -------------------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None, *, progress=None) -> dict:
        """Consume until `stop` is set (or idle_exit_s passes without a message); returns the counts."""
        stop = stop or asyncio.Event()
        backoff = 0.1
        last_message = time.monotonic()
        while not stop.is_set():
            try:
                messages = await self.transport.read(self.options.batch, self.options.block_ms)
                if messages:
                    await self._handle(messages)
                    last_message = time.monotonic()
                    if progress is not None:
                        progress(self.counts)
                else:
                    await self._idle()
                backoff = 0.1
            except (S.StreamUnavailable, StateUnavailable) as exc:
                M.STREAM_UNAVAILABLE.inc()
                log.warning("waiting %.1f s: %s", backoff, exc)
                try:
                    await self.transport.rewind()  # the batch again: from what is not acknowledged
                except S.StreamUnavailable:
                    pass  # still away: rewound at the next failure, or by the broker's own redelivery
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                last_message = time.monotonic()
                continue
            if self.options.idle_exit_s is not None and time.monotonic() - last_message > self.options.idle_exit_s:
                break
        return dict(self.counts)

    async def close(self) -> None:
        await self.transport.close()
        await self.service.close()

    # -------------------------------------------------------------------------------------------------------
    async def _handle(self, messages: list[S.Message]) -> None:
        # The batch's valid transactions go through the decision service's two steps together, in message order:
        # one state read and one atomic commit for all of them (record_many), one Predict call, and one round trip
        # for the answers and alerts (answer_many).
        results = [self._check(message) for message in messages]
        valid = [k for k, (kind, _, _) in enumerate(results) if kind == "valid"]
        if valid:
            observe = None
            if self.drift is not None:
                def observe(row, event, features):
                    self.drift.add(event.time, {**row, **features})
            items = [(results[k][1], results[k][2]) for k in valid]
            # StreamUnavailable / StateUnavailable: run() waits and takes the whole batch again
            pendings = await self.service.record_many(items, observe=observe)
            to_score = [(row, pending["features"]) for (row, _), pending in zip(items, pendings)
                        if "response" not in pending]
            scored = iter(await self.service.score_many(to_score))
            answers = await self.service.answer_many(
                [(event, pending, None if "response" in pending else next(scored))
                 for (_, event), pending in zip(items, pendings)])
            for k, answer in zip(valid, answers):
                results[k] = ("decision", answer, results[k][2])
        outputs: list[tuple[S.Endpoint, dict]] = []
        landed = []
        counts = {"decided": 0, "replayed": 0, "dead_letter": 0}
        for message, (kind, payload, event) in zip(messages, results):
            if kind == "dead_letter":
                outputs.append((self.dead_letters, payload))
                counts["dead_letter"] += 1
                continue
            outputs.append((self.decisions, decision_message(payload)))
            if self.alerts is not None and payload["decision"] != D.APPROVE:
                outputs.append((self.alerts, alert_message(payload, event)))
            counts["replayed" if payload.get("replayed") else "decided"] += 1
            landed.append((event.time, message.fields))
            self.watermark = event.time if self.watermark is None else max(self.watermark, event.time)
        if self.landing is not None and landed:
            self.landing.append(landed)  # durable before the messages are acknowledged
        await self.transport.publish_and_ack(outputs, messages)
        written = time.time()
        for message in messages:
            entered = _redis_entry_seconds(message.id)
            if entered is not None:
                M.STREAM_EVENT_LATENCY.observe(max(0.0, written - entered))
        for outcome, n in counts.items():
            self.counts[outcome] += n
            if n:
                M.STREAM_MESSAGES.labels(outcome=outcome).inc(n)
        await self._after_batch()

    def _check(self, message: S.Message):
        """("valid", standardised row, event) or ("dead_letter", fields with the reason, None)."""
        if message.error is not None:
            return "dead_letter", self._dead({**message.fields}, message, message.error), None
        try:
            row, event = standardise(message.fields)
        except DataContractError as exc:
            return "dead_letter", self._dead(message.fields, message, str(exc)), None
        bad, outside = self.checks.problems(row)
        for name in outside:
            M.STREAM_OUT_OF_DOMAIN.labels(feature=name).inc()
        if bad:
            return "dead_letter", self._dead(message.fields, message, "; ".join(bad)), None
        return "valid", row, event

    @staticmethod
    def _dead(fields: dict, message: S.Message, reason: str) -> dict:
        log.info("dead letter %s: %s", message.id, reason)
        return {**{k: v for k, v in fields.items() if k not in ("error", "source_id")}, "error": reason,
                "source_id": message.id}

    async def _after_batch(self) -> None:
        if self.drift is not None and time.monotonic() - self._drift_at > DRIFT_EVERY_S:
            self.update_drift()
        if self.landing is not None and self.watermark is not None:
            hour = self.watermark // 3600
            if hour != self._landing_hour:  # at most once per hour of event time
                self._landing_hour = hour
                await self.land_ready()

    async def _idle(self) -> None:
        if self.drift is not None and time.monotonic() - self._drift_at > DRIFT_EVERY_S:
            self.update_drift()
        lag = await self.transport.lag()
        if lag is not None:
            M.STREAM_LAG.set(lag)

    def update_drift(self) -> dict:
        self._drift_at = time.monotonic()
        distances = self.drift.distances()
        for name, (value, _limit, n) in distances.items():
            M.FEATURE_DRIFT.labels(feature=name).set(value)
            M.DRIFT_WINDOW_EVENTS.labels(feature=name).set(n)
        return distances

    async def land_ready(self) -> list[Path]:
        """Write out the staged hours whose label delay has passed, with the labels posted so far."""
        if not self.landing.ready(self.watermark):
            M.LANDING_PENDING_HOURS.set(len(self.landing.pending_hours()))
            return []
        labels = labels_by_transaction(await self.service.store.labels(count=10**8))
        written = self.landing.finalize_ready(self.watermark, labels)
        M.LANDED_FILES.inc(len(written))
        M.LANDING_PENDING_HOURS.set(len(self.landing.pending_hours()))
        for path in written:
            log.info("landed %s", path)
        return written


def summary_line(counts: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items())


async def consume(options: ConsumerOptions, decision_options: DecisionOptions, *, echo=print,
                  stop: asyncio.Event | None = None, metrics_port: int | None = None) -> dict:
    import signal

    consumer = Consumer(options, decision_options)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=M.REGISTRY)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    echo(f"Consuming {S.parse(options.source).name} ({options.source.split('://')[0]}) as "
         f"{options.group}/{getattr(consumer.transport, 'consumer', options.consumer or S.default_consumer_name())}"
         f" -> decisions {consumer.decisions.name}"
         + (f", alerts {consumer.alerts.name}" if consumer.alerts else "")
         + f", dead letters {consumer.dead_letters.name}"
         + (f", landing {options.landing}" if options.landing else "")
         + ("" if metrics_port is None else f"; metrics http://127.0.0.1:{metrics_port}/metrics")
         + "  (Ctrl-C stops)")
    last = [time.monotonic()]

    def progress(counts):
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            echo(f"  {summary_line(counts)}")

    try:
        counts = await consumer.run(stop, progress=progress)
    finally:
        await consumer.close()
    echo(f"Stopped: {summary_line(counts)}")
    return counts


__all__ = ["Consumer", "ConsumerOptions", "alert_message", "consume", "dead_letter_url", "decision_message"]
