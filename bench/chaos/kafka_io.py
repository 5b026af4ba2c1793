"""The chaos soak's Kafka side, with confluent_kafka (never streamagg's code): topics created and
deleted, the replication health check between broker faults, the writer of malformed (and a few
odd but valid) records, the end-of-input seals, and reading topics whole (`read_committed`)."""

import json
import random
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from malformed import malformed_payload

SEAL_SOURCE = "chaos.seal"
SEAL_AFTER_MS = 15 * 60 * 1000


# librdkafka's own log lines (every refused connection while a node is down) only at level 2 and
# above: the soak reports what happened itself.
QUIET = {"log_level": 2}


def admin(brokers):
    return AdminClient({"bootstrap.servers": brokers, **QUIET})


def create_topics(brokers, names, partitions, timeout_s=60):
    client = admin(brokers)  # kept alive until the futures resolve (its destruction fails them)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=3) for name in names],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        future.result(timeout=timeout_s)


def delete_topics(brokers, names, group=None, timeout_s=30):
    """Best effort (the soak's last step): returns what could not be deleted."""
    client = admin(brokers)
    failed = []
    for name, future in client.delete_topics(list(names), operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as error:  # noqa: BLE001 (reported, not fatal)
            failed.append(f"{name}: {error}")
    if group:
        for name, future in client.delete_consumer_groups([group], request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
            except Exception as error:  # noqa: BLE001
                failed.append(f"group {name}: {error}")
    return failed


def under_replicated(brokers, timeout_s=10):
    """Partitions (of every topic, internal ones included) with fewer than 3 in-sync replicas."""
    client = admin(brokers)
    metadata = client.list_topics(timeout=timeout_s)
    return [f"{name}/{pid}" for name, topic in metadata.topics.items()
            for pid, partition in topic.partitions.items() if len(partition.isrs) < 3 or partition.leader < 0]


def wait_fully_replicated(brokers, deadline_s):
    """Waits until every partition has three in-sync replicas again; returns seconds waited, or None."""
    started = time.time()
    while time.time() - started < deadline_s:
        try:
            if not under_replicated(brokers):
                return time.time() - started
        except Exception:  # noqa: BLE001 (metadata can time out while a node restarts)
            pass
        time.sleep(1)
    return None


def producer(brokers):
    return Producer({**QUIET, "bootstrap.servers": brokers, "enable.idempotence": True, "partitioner": "murmur2_random",
                     "message.timeout.ms": 180000, "linger.ms": 20})


class MalformedWriter(threading.Thread):
    """Writes about `per_second` odd records a second into the input topic until stopped."""

    def __init__(self, brokers, topic, per_second, seed, deadline_s):
        super().__init__(name="malformed-writer", daemon=True)
        self.brokers, self.topic, self.per_second = brokers, topic, per_second
        self.rng = random.Random(seed)
        self.deadline = time.time() + deadline_s
        self.stop = threading.Event()
        self.written = {}
        self.failed = 0

    def _delivered(self, error, _message):
        if error is not None:
            self.failed += 1

    def run(self):
        out = producer(self.brokers)
        serial = 0
        while not self.stop.is_set() and time.time() < self.deadline:
            kind, payload = malformed_payload(self.rng, int(time.time() * 1000))
            key = json.loads(payload)["source"].encode() if kind == "extra_field" else f"junk-{serial}".encode()
            out.produce(self.topic, payload, key, on_delivery=self._delivered)
            self.written[kind] = self.written.get(kind, 0) + 1
            serial += 1
            out.poll(0)
            self.stop.wait(1.0 / self.per_second)
        out.flush(120)


def write_seals(brokers, topic, partitions):
    """One event 15 minutes past now on every partition, so every earlier window of it closes."""
    out = producer(brokers)
    payload = json.dumps({"source": SEAL_SOURCE, "timestamp": int(time.time() * 1000) + SEAL_AFTER_MS,
                          "value": 0.0}).encode()
    for partition in range(partitions):
        out.produce(topic, payload, SEAL_SOURCE.encode(), partition=partition)
    if out.flush(120) != 0:
        raise RuntimeError("the seals were not delivered within 120 s")


def consumer(brokers, extra=None):
    config = {**QUIET, "bootstrap.servers": brokers, "group.id": f"chaos-verifier-{random.getrandbits(48):x}",
              "enable.auto.commit": False, "isolation.level": "read_committed", "enable.partition.eof": True,
              "auto.offset.reset": "earliest"}
    config.update(extra or {})
    return Consumer(config)


def end_offsets(client, topic, partitions, timeout_s=20):
    return {p: client.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in range(partitions)}


def read_whole(brokers, topic, partitions, on_record, deadline_s):
    """Every record of `topic` from the beginning to the end it has now (read_committed: to the
    last stable offset), in offset order per partition; on_record(partition, offset, value, headers).
    Returns True if it reached the end before the deadline."""
    client = consumer(brokers)
    try:
        ends = end_offsets(client, topic, partitions)
        client.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.time() + deadline_s
        while pending and time.time() < deadline:
            message = client.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF and message.offset() >= ends[message.partition()]:
                    pending.discard(message.partition())
                continue
            on_record(message.partition(), message.offset(), message.value(), message.headers())
            if message.offset() + 1 >= ends[message.partition()]:
                pending.discard(message.partition())
        return not pending
    finally:
        client.close()
