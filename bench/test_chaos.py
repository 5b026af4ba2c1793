"""Tests of the chaos soak's pure parts (bench/chaos: oracle, schedule, malformed records, resume
and memory measurements), with the standard library only: `python3 -m unittest discover -s bench`."""

import json
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaos"))
from malformed import KINDS, VALID_KINDS, malformed_payload  # noqa: E402
from metrics import resume_after, rss_trend  # noqa: E402
from oracle import Oracle, judge, parse_event  # noqa: E402
from schedule import KINDS as FAULT_KINDS, digest, make_schedule  # noqa: E402


def event(source, timestamp, value):
    return json.dumps({"source": source, "timestamp": timestamp, "value": value}).encode()


class OracleTest(unittest.TestCase):
    def test_stream_time_lateness_and_closing_are_per_partition(self):
        oracle = Oracle(size_ms=10_000, grace_ms=2_000)
        oracle.feed(0, 0, event("a", 1_000, 1.0))
        oracle.feed(0, 1, event("a", 9_000, 3.0))
        oracle.feed(1, 0, event("b", 30_000, 5.0))  # partition 1's stream time does not close partition 0's window
        self.assertEqual(oracle.closed_windows(), {})
        oracle.feed(0, 2, event("a", 11_999, 7.0))  # stream time 11,999 < close 12,000: still open
        self.assertEqual(oracle.closed_windows(), {})
        self.assertEqual(oracle.feed(0, 3, event("a", 12_000, 9.0)), "counted")  # closes [0, 10,000)
        self.assertEqual(oracle.feed(0, 4, event("a", 500, 100.0)), "late")
        self.assertEqual(oracle.feed(0, 5, b"{nope"), "invalid")
        self.assertEqual(oracle.closed_windows(),
                         {("a", 0): (0, {"count": 2, "sum": 4.0, "min": 1.0, "max": 3.0})})
        self.assertEqual(set(oracle.late), {(0, 4)})
        self.assertEqual(oracle.invalid, {(0, 5)})

    def test_bad_records_do_not_advance_stream_time(self):
        oracle = Oracle(size_ms=10_000, grace_ms=0)
        oracle.feed(0, 0, event("a", 1_000, 1.0))
        oracle.feed(0, 1, event("", 99_000, 1.0))  # empty source: invalid, stream time stays 1,000
        self.assertEqual(oracle.feed(0, 2, event("a", 2_000, 2.0)), "counted")
        self.assertEqual(oracle.closed_windows(), {})

    def test_every_malformed_kind_is_bad_input_and_the_valid_kind_is_not(self):
        rng = random.Random(3)
        seen = set()
        for _ in range(500):
            kind, payload = malformed_payload(rng, 1_700_000_000_000)
            seen.add(kind)
            self.assertEqual(parse_event(payload) is not None, kind in VALID_KINDS, (kind, payload))
        self.assertEqual(seen, set(KINDS))

    def test_parse_refuses_booleans_and_floats_where_integers_or_numbers_belong(self):
        self.assertIsNone(parse_event(b'{"source":"a","timestamp":true,"value":1}'))
        self.assertIsNone(parse_event(b'{"source":"a","timestamp":1.5,"value":1}'))
        self.assertIsNone(parse_event(b'{"source":"a","timestamp":1,"value":false}'))
        self.assertIsNone(parse_event(b'{"source":"a","timestamp":1,"value":1e999}'))
        self.assertEqual(parse_event(b'{"source":"a","timestamp":1,"value":2,"x":[1]}'), ("a", 1, 2.0))


class JudgeTest(unittest.TestCase):
    def setUp(self):
        self.oracle = Oracle(size_ms=10_000, grace_ms=0)
        for offset, (ts, value) in enumerate([(1_000, 1.0), (2_000, 3.0), (10_500, 2.0), (25_000, 1.0)]):
            self.oracle.feed(0, offset, event("a", ts, value))
        self.oracle.feed(0, 4, event("a", 100, 9.0))  # late
        self.oracle.feed(0, 5, b"")  # invalid

    def output(self, start, count, total, low, high):
        return {"source": "a", "window_start": start, "window_end": start + 10_000, "count": count, "sum": total,
                "avg": total / count, "min": low, "max": high}

    def kinds(self, outputs, late=((0, 4),), dlq=((0, 5),)):
        return sorted(v["kind"] for v in judge(self.oracle, outputs, list(late), list(dlq), 10_000)[1])

    def test_a_correct_output_passes(self):
        stats, violations = judge(self.oracle, [self.output(0, 2, 4.0, 1.0, 3.0), self.output(10_000, 1, 2.0, 2.0, 2.0)],
                                  [(0, 4)], [(0, 5)], 10_000)
        self.assertEqual(violations, [])
        self.assertEqual(stats["windows_checked"], 2)

    def test_missing_duplicate_wrong_and_extra_windows_are_violations(self):
        right = [self.output(0, 2, 4.0, 1.0, 3.0), self.output(10_000, 1, 2.0, 2.0, 2.0)]
        self.assertEqual(self.kinds(right[:1]), ["missing"])
        self.assertEqual(self.kinds(right + right[:1]), ["duplicate"])
        self.assertEqual(self.kinds([self.output(0, 2, 4.0 + 1e-6, 1.0, 3.0), right[1]]), ["wrong_value"])
        self.assertEqual(self.kinds(right + [self.output(20_000, 1, 1.0, 1.0, 1.0)]), ["extra"])  # not closed yet

    def test_side_outputs_must_hold_every_late_and_invalid_record_once(self):
        right = [self.output(0, 2, 4.0, 1.0, 3.0), self.output(10_000, 1, 2.0, 2.0, 2.0)]
        self.assertEqual(self.kinds(right, late=()), ["late_missing"])
        self.assertEqual(self.kinds(right, dlq=[(0, 5), (0, 5)]), ["dlq_duplicate"])
        self.assertEqual(self.kinds(right, dlq=[(0, 5), (0, 1)]), ["dlq_extra"])

    def test_sums_agree_to_a_relative_1e_9(self):
        out = [self.output(0, 2, 4.0 * (1 + 5e-10), 1.0, 3.0), self.output(10_000, 1, 2.0, 2.0, 2.0)]
        self.assertEqual(self.kinds(out), [])


class ScheduleTest(unittest.TestCase):
    def test_a_seed_gives_one_schedule(self):
        self.assertEqual(make_schedule(16, 8, 3.0, 3), make_schedule(16, 8, 3.0, 3))
        self.assertEqual(digest(make_schedule(16, 8, 3.0, 3)), digest(make_schedule(16, 8, 3.0, 3)))
        self.assertNotEqual(digest(make_schedule(16, 8, 3.0, 3)), digest(make_schedule(17, 8, 3.0, 3)))

    def test_every_kind_once_when_there_is_room_and_targets_are_valid(self):
        faults = make_schedule(5, 40, 3.0, 2)
        self.assertEqual({f["kind"] for f in faults[:len(FAULT_KINDS)]}, set(FAULT_KINDS))
        for fault in faults:
            if fault["kind"].startswith("processor_"):
                self.assertIn(fault["instance"], (0, 1))
            elif fault["kind"] == "two_brokers_down":
                self.assertEqual(len(set(fault["brokers"])), 2)
            else:
                self.assertIn(fault["broker"], (1, 2, 3))


class MeasureTest(unittest.TestCase):
    def test_resume_waits_for_every_partition(self):
        partition_of = {("a", 0): 0, ("b", 0): 1, ("a", 10_000): 0, ("b", 10_000): 1}
        arrivals = [(5.0, "a", 0), (5.1, "b", 0), (13.0, "a", 10_000), (21.0, "b", 10_000)]
        # Fault at t=6 s; windows of 10 s close at start + 10 s (+ 0 grace).
        self.assertEqual(resume_after(6.0, arrivals, partition_of, lambda s: s + 10_000), (15.0, 14.0, 1.0))
        self.assertIsNone(resume_after(22.0, arrivals, partition_of, lambda s: s + 10_000))

    def test_rss_growth_needs_both_ratio_and_slack(self):
        flat = [(t, 100.0 + (t % 3)) for t in range(40)]
        grows = [(t, 100.0 + 5 * t) for t in range(40)]
        self.assertFalse(rss_trend(flat)["grew"])
        self.assertTrue(rss_trend(grows)["grew"])
        self.assertIsNone(rss_trend(flat[:3])["grew"])


if __name__ == "__main__":
    unittest.main()
