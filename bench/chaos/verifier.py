"""The chaos soak's live verifier: follows the input topic (feeding the independent oracle) and the
output topic (read_committed) while the soak runs, timestamps every output record as it becomes
visible, and flags a duplicate or a wrong window as soon as it sees one. The end-of-soak verdict is
taken again from scratch (kafka_io.read_whole + oracle.judge); this one gives the timings."""

import json
import threading
import time

from confluent_kafka import KafkaError, TopicPartition

import kafka_io
from oracle import Oracle, compare_window


class LiveVerifier:
    def __init__(self, brokers, topics, partitions, size_ms, grace_ms, deadline_s):
        self.brokers, self.topics, self.partitions = brokers, topics, partitions
        self.size_ms = size_ms
        self.oracle = Oracle(size_ms, grace_ms)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = time.time() + deadline_s
        self.input_next = {}  # partition -> next offset the oracle expects
        self.arrivals = []  # (wall seconds, source, window_start)
        self.seen = {}  # (source, start) -> output record (the first)
        self.unchecked = set()  # keys seen whose window the oracle had not closed yet
        self.violations = []
        self.errors = []
        self.threads = [threading.Thread(target=self._follow, args=(topics["input"], self._on_input), daemon=True,
                                         name="follow-input"),
                        threading.Thread(target=self._follow, args=(topics["output"], self._on_output), daemon=True,
                                         name="follow-output")]

    def start(self):
        for thread in self.threads:
            thread.start()

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _follow(self, topic, handle):
        try:
            client = kafka_io.consumer(self.brokers, {"enable.partition.eof": False})
            client.assign([TopicPartition(topic, p, 0) for p in range(self.partitions)])
            while not self.stop.is_set() and time.time() < self.deadline:
                message = client.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(f"{topic}: {message.error()}")
                    continue
                with self.lock:
                    handle(message)
            client.close()
        except Exception as error:  # noqa: BLE001 (reported: a live verifier that died is a failed soak)
            self.errors.append(f"{topic} follower died: {error!r}")

    def _on_input(self, message):
        self.oracle.feed(message.partition(), message.offset(), message.value())
        self.input_next[message.partition()] = message.offset() + 1
        if self.unchecked:
            self._check_unchecked()

    def _on_output(self, message):
        now = time.time()
        try:
            record = json.loads(message.value())
            key = (record["source"], record["window_start"])
        except (TypeError, ValueError, KeyError):
            self.violations.append({"kind": "undecodable_output", "at": now, "offset": message.offset()})
            return
        self.arrivals.append((now, key[0], key[1]))
        if key in self.seen:
            self.violations.append({"kind": "duplicate", "at": now, "window": list(key)})
            return
        self.seen[key] = record
        self.unchecked.add(key)
        self._check_unchecked()

    def _check_unchecked(self):
        for key in list(self.unchecked):
            partition = self.oracle.partition_of(key[0])
            closed = self.oracle.partitions[partition].closed if partition is not None else {}
            if key in closed:
                self.unchecked.discard(key)
                problems = compare_window(closed[key], self.seen[key], self.size_ms)
                if problems:
                    self.violations.append({"kind": "wrong_value", "at": time.time(), "window": list(key),
                                            "problems": problems})

    def caught_up(self, ends):
        """The input follower has fed the oracle every record below `ends` (partition -> offset)."""
        with self.lock:
            return all(self.input_next.get(p, 0) >= end for p, end in ends.items() if end > 0)

    def missing(self):
        """Windows the oracle has closed that no output record carries yet."""
        with self.lock:
            return [key for key in self.oracle.closed_windows() if key not in self.seen]

    def snapshot(self):
        with self.lock:
            return list(self.arrivals), {key: self.oracle.partition_of(key[0]) for key in self.seen}
