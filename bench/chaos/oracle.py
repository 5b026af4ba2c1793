"""The chaos soak's oracle: streamagg's documented semantics (README, "Semantics") recomputed from the
input topic's records, independently of streamagg's code. Pure Python, no Kafka client: the soak
feeds it records as it reads them (per partition, in offset order) and asks which windows closed.

Semantics, for JSON input without --min-value:
- a record is valid iff its payload is a JSON object with a non-empty string `source` of at most
  1,024 UTF-8 bytes, an integer `timestamp` and a finite number `value` (unknown fields ignored);
  anything else is bad input: counted, never aggregated, never advances stream time;
- stream time is per input partition: the largest valid event time seen so far on it;
- windows are tumbling and epoch-aligned, [start, start + size); a window closes once its partition's
  stream time reaches start + size + grace, and an event whose window is closed *before* it arrives
  is late (not aggregated, forwarded to the late topic);
- every closed window is emitted once: count, sum, avg = sum / count, min, max.
"""

import json
import math
from collections import defaultdict

MAX_SOURCE_BYTES = 1024
# Timestamps this near the ends of i64 time are bad input for streamagg ("within a few windows");
# the soak never writes them, so the oracle refuses to guess the exact bound and stops instead.
SANE_TIMESTAMP_BOUND = 2**62


class OracleCannotJudge(Exception):
    """An input record outside what this oracle models (the soak must not write such records)."""


def parse_event(payload):
    """(source, timestamp, value) of a valid TrafficEvent JSON payload, or None for bad input."""
    if payload is None:
        return None
    try:
        event = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(event, dict):
        return None
    source, timestamp, value = event.get("source"), event.get("timestamp"), event.get("value")
    if not isinstance(source, str) or not source or len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        return None
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if abs(timestamp) >= SANE_TIMESTAMP_BOUND:
        raise OracleCannotJudge(f"timestamp {timestamp} near the ends of time")
    return source, timestamp, float(value)


class Window:
    """The values of one (source, window_start) in input order, and its aggregate."""

    __slots__ = ("values",)

    def __init__(self):
        self.values = []

    def aggregate(self):
        total = 0.0
        for value in self.values:
            total += value
        return {"count": len(self.values), "sum": total, "min": min(self.values), "max": max(self.values)}


class PartitionOracle:
    """One input partition's stream time, open windows and the windows it has closed."""

    def __init__(self, size_ms, grace_ms):
        self.size_ms, self.grace_ms = size_ms, grace_ms
        self.stream_time = None
        self.next_offset = None
        self.open = {}  # start -> {source: Window}
        self.closed = {}  # (source, start) -> aggregate
        self.sources = set()

    def close_time(self, start):
        return start + self.size_ms + self.grace_ms

    def feed(self, offset, payload):
        """One record, in offset order. Returns 'invalid', 'late' or 'counted'."""
        if self.next_offset is not None and offset < self.next_offset:
            raise ValueError(f"offset {offset} after {self.next_offset - 1}: records must come in offset order")
        self.next_offset = offset + 1
        event = parse_event(payload)
        if event is None:
            return "invalid"
        source, timestamp, value = event
        start = timestamp - timestamp % self.size_ms  # Python's % floors: epoch-aligned for negatives too
        if self.stream_time is not None and self.close_time(start) <= self.stream_time:
            return "late"
        self.stream_time = timestamp if self.stream_time is None else max(self.stream_time, timestamp)
        self.open.setdefault(start, {}).setdefault(source, Window()).values.append(value)
        self.sources.add(source)
        for due in [s for s in self.open if self.close_time(s) <= self.stream_time]:
            for source, window in self.open.pop(due).items():
                self.closed[(source, due)] = window.aggregate()
        return "counted"


class Oracle:
    """Every input partition's oracle, plus which records were late or invalid (by partition, offset)."""

    def __init__(self, size_ms, grace_ms):
        self.size_ms, self.grace_ms = size_ms, grace_ms
        self.partitions = defaultdict(lambda: PartitionOracle(size_ms, grace_ms))
        self.late = {}  # (partition, offset) -> payload
        self.invalid = set()  # (partition, offset)
        self.counted = 0

    def feed(self, partition, offset, payload):
        verdict = self.partitions[partition].feed(offset, payload)
        if verdict == "late":
            self.late[(partition, offset)] = payload
        elif verdict == "invalid":
            self.invalid.add((partition, offset))
        else:
            self.counted += 1
        return verdict

    def closed_windows(self):
        """(source, start) -> (input partition, aggregate) for every window closed so far."""
        windows = {}
        for partition, oracle in self.partitions.items():
            for key, aggregate in oracle.closed.items():
                if key in windows:
                    raise OracleCannotJudge(f"source {key[0]!r} appears on partitions {windows[key][0]} and {partition}")
                windows[key] = (partition, aggregate)
        return windows

    def partition_of(self, source):
        for partition, oracle in self.partitions.items():
            if source in oracle.sources:
                return partition
        return None


def close_enough(a, b, relative=1e-9):
    return abs(a - b) <= relative * max(abs(a), abs(b), 1.0)


def compare_window(expected, output, size_ms):
    """A list of differences between an oracle aggregate and an output record (empty if it matches)."""
    problems = []
    if output.get("count") != expected["count"]:
        problems.append(f"count {output.get('count')} != {expected['count']}")
    for field in ("sum", "min", "max"):
        got = output.get(field)
        if not isinstance(got, (int, float)) or not close_enough(float(got), expected[field]):
            problems.append(f"{field} {got!r} != {expected[field]!r}")
    avg = output.get("avg")
    want_avg = expected["sum"] / expected["count"]
    if not isinstance(avg, (int, float)) or not close_enough(float(avg), want_avg):
        problems.append(f"avg {avg!r} != {want_avg!r}")
    if output.get("window_end") != output.get("window_start", 0) + size_ms:
        problems.append(f"window_end {output.get('window_end')} != window_start + {size_ms}")
    return problems


def provenance(headers):
    """(partition, offset) from a late or DLQ copy's streamagg.partition/offset headers, or None."""
    values = dict(headers or [])
    try:
        return int(values["streamagg.partition"]), int(values["streamagg.offset"])
    except (KeyError, TypeError, ValueError):
        return None


def judge(oracle, outputs, late_copies, dlq_copies, size_ms):
    """Holds what the processors wrote (read_committed) to what the oracle expects.

    outputs: decoded output records (dicts, or None for an undecodable one); late_copies and
    dlq_copies: (partition, offset) provenance of each late / DLQ record (None if missing).
    Returns (stats, violations): every oracle-closed window present exactly once with its values,
    nothing extra; every late and every invalid input record forwarded exactly once, nothing else.
    """
    expected = oracle.closed_windows()
    violations = []
    seen = {}
    for record in outputs:
        if not isinstance(record, dict):
            violations.append({"kind": "undecodable_output", "record": repr(record)[:200]})
            continue
        key = (record.get("source"), record.get("window_start"))
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            violations.append({"kind": "duplicate", "window": list(key)})
        if key not in expected:
            violations.append({"kind": "extra", "window": list(key), "record": record})
            continue
        if seen[key] == 1:
            problems = compare_window(expected[key][1], record, size_ms)
            if problems:
                violations.append({"kind": "wrong_value", "window": list(key), "partition": expected[key][0],
                                   "problems": problems, "record": record, "expected": expected[key][1]})
    missing = [key for key in expected if key not in seen]
    for key in sorted(missing):
        violations.append({"kind": "missing", "window": list(key), "partition": expected[key][0],
                           "expected": expected[key][1]})
    for name, copies, wanted in (("late", late_copies, set(oracle.late)), ("dlq", dlq_copies, oracle.invalid)):
        counts = {}
        for where in copies:
            counts[where] = counts.get(where, 0) + 1
        for where, times in sorted(counts.items(), key=repr):
            if where not in wanted:
                violations.append({"kind": f"{name}_extra", "record": where})
            elif times > 1:
                violations.append({"kind": f"{name}_duplicate", "record": where, "times": times})
        for where in sorted(wanted - set(counts)):
            violations.append({"kind": f"{name}_missing", "record": where})
    stats = {
        "windows_expected": len(expected),
        "windows_checked": len([key for key in expected if key in seen]),
        "output_records": len(outputs),
        "input_counted": oracle.counted,
        "input_late": len(oracle.late),
        "input_invalid": len(oracle.invalid),
        "late_copies": len(late_copies),
        "dlq_copies": len(dlq_copies),
    }
    return stats, violations
