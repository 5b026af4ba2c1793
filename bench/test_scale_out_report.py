"""Table tests of bench/scale_out_report.py and bench/capacity.py's pure parts:
`python3 -m unittest discover -s bench -p 'test_*.py'`."""

import json
import os
import unittest

import capacity
from scale_out_report import longest_gaps, pause_summary, settled_rates, state_per_window

EVERY_SECOND = [float(t) for t in range(0, 31)]  # one output per second, 0..30


class LongestGaps(unittest.TestCase):
    def test_cases(self):
        cases = [
            # (name, arrivals, start, end, expected (gap, ended))
            ("steady", EVERY_SECOND, 10.0, 20.0, (1.0, 11.0)),
            ("pause after the event", [t for t in EVERY_SECOND if not 12 <= t <= 16], 10.0, 25.0, (6.0, 17.0)),
            ("pause that began before the event", [t for t in EVERY_SECOND if not 10 <= t <= 13], 10.5, 25.0, (5.0, 14.0)),
            ("silent until the end", [t for t in EVERY_SECOND if t <= 12], 10.0, 25.0, (13.0, 25.0)),
            ("never emitted at all", [], 10.0, 25.0, (15.0, 25.0)),
        ]
        for name, arrivals, start, end, expected in cases:
            with self.subTest(name):
                self.assertEqual(longest_gaps({0: arrivals}, start, end)[0], expected)


class PauseSummary(unittest.TestCase):
    def test_only_partitions_silent_longer_than_twice_the_steady_gap_count_as_paused(self):
        arrivals = {0: EVERY_SECOND,
                    1: [t for t in EVERY_SECOND if not 12 <= t <= 15],  # 5 s silence, ends at 16
                    2: [t for t in EVERY_SECOND if not 11 <= t <= 12]}  # 3 s silence: paused (> 2 × 1 s)
        summary = pause_summary(arrivals, 10.0, 25.0, baseline_gap=1.0)
        self.assertEqual(summary["partitions_paused"], 2)
        self.assertEqual(summary["max_silence_s"], 5.0)
        self.assertEqual(summary["all_emitting_again_after_s"], 6.0)
        self.assertEqual(summary["partitions_never_emitted"], 0)

    def test_a_partition_that_never_emits_again_is_paused_until_the_end(self):
        arrivals = {0: EVERY_SECOND, 1: [t for t in EVERY_SECOND if t <= 10]}
        summary = pause_summary(arrivals, 10.0, 25.0, baseline_gap=1.0)
        self.assertEqual(summary["partitions_never_emitted"], 1)
        self.assertEqual(summary["all_emitting_again_after_s"], 15.0)

    def test_no_pause(self):
        summary = pause_summary({0: EVERY_SECOND, 1: EVERY_SECOND}, 10.0, 25.0, baseline_gap=1.0)
        self.assertEqual((summary["partitions_paused"], summary["all_emitting_again_after_s"]), (0, 0.0))


class SettledRates(unittest.TestCase):
    def test_from_the_last_change_of_assignment_to_the_last_growth(self):
        series = [
            (0.0, [None, None]),
            (1.0, [(100, 12, 0.1), None]),            # one instance owns everything
            (2.0, [(300, 12, 0.3), (0, 0, 0.05)]),
            (3.0, [(400, 6, 0.4), (50, 6, 0.1)]),     # settled: 6 + 6
            (4.0, [(600, 6, 0.6), (250, 6, 0.3)]),
            (5.0, [(800, 6, 0.8), (450, 6, 0.5)]),
            (6.0, [(800, 6, 0.8), (450, 6, 0.5)]),    # drained
        ]
        result = settled_rates(series, 12)
        self.assertEqual(result["settled_after_s"], 3.0)
        self.assertEqual(result["span_s"], 2.0)
        self.assertEqual(result["events_per_s"], 400.0)
        self.assertEqual(result["per_instance_events_per_s"], [200.0, 200.0])
        self.assertAlmostEqual(result["cpu_s_per_m_events"], 0.8 * 1e6 / 800)

    def test_a_run_that_ends_before_settling_has_no_settled_rate(self):
        series = [(0.0, [(100, 12, 0.1), (0, 0, 0.0)]), (1.0, [(200, 12, 0.2), (0, 0, 0.0)])]
        self.assertIsNone(settled_rates(series, 12))

    def test_a_later_move_restarts_the_settled_span(self):
        series = [(0.0, [(0, 6, 0.0), (0, 6, 0.0)]), (1.0, [(100, 6, 0.1), (100, 6, 0.1)]),
                  (2.0, [(200, 4, 0.2), (150, 8, 0.2)]), (3.5, [(300, 4, 0.3), (350, 8, 0.4)])]
        result = settled_rates(series, 12)
        self.assertEqual((result["settled_after_s"], result["span_s"], result["events_per_s"]), (2.0, 1.5, 200.0))


class StatePerWindow(unittest.TestCase):
    def test_rss_difference_over_open_window_difference(self):
        small = {"open_windows": 1000, "peak_rss_mib": 100.0, "state_dir_bytes": 0, "state_size_bytes": 0}
        large = {"open_windows": 1_049_576, "peak_rss_mib": 300.0, "state_dir_bytes": 104_957_600,
                 "state_size_bytes": 52_478_800}
        result = state_per_window(small, large)
        self.assertAlmostEqual(result["rss_bytes_per_open_window"], 200 * 2**20 / 1_048_576)
        self.assertEqual(result["state_dir_bytes_per_open_window"], 100)
        self.assertEqual(result["state_size_bytes_per_open_window"], 50)


def inputs():
    values, _ = capacity.load_inputs(os.path.join(os.path.dirname(__file__), "capacity-inputs.json"))
    return values


class CapacityPlan(unittest.TestCase):
    def test_per_window_costs_from_the_k_curve(self):
        v = dict(inputs(), kcurve_events=1_000_000,
                 kcurve_few={"sources": 1, "windows": 0, "cpu_s_per_m_events": 1.0, "state_written_mib": 0},
                 kcurve_many={"sources": 2, "windows": 1_000_000, "cpu_s_per_m_events": 3.0, "state_written_mib": 100})
        self.assertAlmostEqual(capacity.per_window_cpu_s(v), 2e-6)
        self.assertAlmostEqual(capacity.per_window_write_bytes(v), 100 * 2**20 / 1e6)

    def test_plans(self):
        v = dict(inputs(), cpu_s_per_m_events=1.0, instance_max_cores=1.0, target_utilisation=1.0,
                 kcurve_few={"sources": 1, "windows": 0, "cpu_s_per_m_events": 1.0, "state_written_mib": 0},
                 kcurve_many={"sources": 2, "windows": 1, "cpu_s_per_m_events": 1.0, "state_written_mib": 0},
                 event_bytes_on_broker=100, output_bytes_on_broker=100, partition_mb_s=10, broker_ingress_mb_s=50,
                 min_brokers=3, min_partitions=12, partitions_per_instance_headroom=2, window_s=60, grace_s=0)
        cases = [
            # (rate, sources) -> (instances, partitions, brokers, windows/s): 1 µs per event, no window cost
            ((1_000_000, 600), (1, 12, 3, 10)),          # 1 core; 100 MB/s in → 10 partitions < 12; 2 brokers < 3
            ((3_500_000, 600), (4, 35, 8, 10)),          # 3.5 cores; 350 MB/s → 35 partitions; 350 MB/s + the output > 7 × 50 → 8 brokers
            ((10, 1_000_000), (1, 12, 3, 10)),           # a source with no event in a window emits nothing
        ]
        for (rate, sources), expected in cases:
            with self.subTest(rate=rate, sources=sources):
                p = capacity.plan(rate, sources, v)
                self.assertEqual((p["instances"], p["partitions"], p["brokers"], round(p["windows_per_s"])), expected)

    def test_more_window_sizes_and_percentiles(self):
        # Every source sends in every window of every size (many events, few sources): each size
        # adds sources / size windows per second and sources × (1 + grace / size) open windows.
        v = dict(inputs(), cpu_s_per_m_events=1.0, grace_s=60, memory_bytes_per_open_window=100,
                 percentile_cpu_s_per_m_events=0.5, percentile_bytes_per_open_window=50,
                 rollup_window_cpu_s=3e-6,
                 kcurve_events=1_000_000,
                 kcurve_few={"sources": 1, "windows": 0, "cpu_s_per_m_events": 1.0, "state_written_mib": 0},
                 kcurve_many={"sources": 2, "windows": 1_000_000, "cpu_s_per_m_events": 2.0, "state_written_mib": 0})
        sources, rate = 600, 1_000_000
        cases = [
            # (sizes, percentiles) -> (windows/s, open windows, cores busy: 1 µs per event, 1 µs per
            # window of the first size, 3 µs per window of a larger one)
            (([60], False), (10, 1200, 1.00001)),
            (([60, 300, 3600], False), (10 + 2 + 1 / 6, 1200 + 720 + 610, 1.0000165)),
            (([60], True), (10, 1200, 1.50001)),
        ]
        for (sizes, percentiles), (windows, open_windows, cores) in cases:
            with self.subTest(sizes=sizes, percentiles=percentiles):
                p = capacity.plan(rate, sources, v, sizes, percentiles)
                self.assertAlmostEqual(p["windows_per_s"], windows, places=3)
                self.assertAlmostEqual(p["open_windows_per_instance"] * p["instances"], open_windows, places=3)
                self.assertAlmostEqual(p["cpu_cores"], cores, places=6)
        self.assertEqual(capacity.durations("1m,5m,1h,1d,30s"), [60, 300, 3600, 86400, 30])

    def test_every_input_has_a_source(self):
        with open(os.path.join(os.path.dirname(__file__), "capacity-inputs.json")) as f:
            raw = json.load(f)
        for name, entry in raw.items():
            if not name.startswith("_"):
                with self.subTest(name):
                    self.assertTrue(entry["source"].strip())


if __name__ == "__main__":
    unittest.main()
