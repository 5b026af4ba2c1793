"""The scale-out curve behind `bench/scale-out` (which builds everything and starts the broker first).

Two phases on one broker, one run:

1. **Throughput at 1, 2, 3 instances.** One 12-partition Avro topic is preloaded once (`streamagg
   produce --seal`) and its oracle computed (bench/driver.py). For each instance count N, N `streamagg
   run` processes start together in one fresh group, each with its own state dir and metrics
   address; the run lasts from the first record any of them consumed until the last expected window
   is on the output topic (read_committed). Per instance: records consumed (its
   `streamagg_records_consumed_total`, replays included), CPU-s and peak RSS (/proc); the output is
   compared with the oracle (every window exactly once).
2. **Rebalance pause.** With N instances processing live traffic (`streamagg produce --rate`, event
   time = wall clock, 1 s windows so every partition emits about once a second), one instance joins,
   is restarted (SIGTERM, then the same instance id and state dir), and leaves (SIGTERM); a follower
   (Debian's kcat, read_committed) timestamps every output record by partition, and the pause is the
   longest silence of any partition across the event. Once with dynamic membership, once with
   `--static-membership`. Output and input topics have the same partition count and both producers
   partition by murmur2 of the source, so output partition p carries input partition p's windows.

A benchmark, not a test: it asserts that every output is right, never a timing.
Everything it needs comes from the environment `bench/scale-out` sets: STREAMAGG_BIN, FOLLOW_BIN,
BROKERS, REPO_ROOT.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402  (reads STREAMAGG_BIN, BROKERS, REPO_ROOT at import)
from driver import log, sa  # noqa: E402
from scale_out_report import (PARTITIONS, longest_gaps, pause_summary, report_lines,  # noqa: E402
                              settled_rates, state_per_window)

STEADY_TIMEOUT_S = 90
MIN_OBSERVE_S = 15


def create_topic(name, partitions=PARTITIONS):
    sa("topics", "create", name, "--partitions", str(partitions))
    driver.TOPICS.append(name)
    return name


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    """Sums of every sample per metric name from an instance's /metrics (labels folded)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            pass
    return totals


# ---------------------------------------------------------------------------------------------
# streamagg instances


class Instance:
    """One `streamagg run` process with its own state dir, metrics port, log and instance id."""

    def __init__(self, name, work, run_args, static):
        self.name, self.run_args, self.static = name, run_args, static
        self.state = tempfile.mkdtemp(prefix=f"state-{name}-", dir=work)
        self.log_path = os.path.join(work, f"{name}.log")
        self.port = free_port()
        self.instance_id = f"scaleout-{driver.RUN_ID}-{name}"
        self.process = None
        self.sample = (0.0, 0.0, 0)

    def start(self):
        command = [driver.STREAMAGG, "run", "--brokers", driver.BROKERS, *self.run_args,
                   "--state-dir", self.state, "--instance-id", self.instance_id,
                   "--metrics-addr", f"127.0.0.1:{self.port}"]
        if self.static:
            command.append("--static-membership")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn,streamagg::processor=info"))
        with open(self.log_path, "a") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=log_file, env=env)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def measure(self):
        """Samples CPU, peak RSS and bytes written from /proc while the process lives."""
        if self.alive():
            try:
                self.sample = driver.proc_sample(self.process.pid)
            except OSError:
                pass
        return self.sample

    def first_record_s(self):
        with open(self.log_path, errors="replace") as f:
            found = re.search(r"first_record_ms=(\d+)", f.read())
        return int(found.group(1)) / 1000 if found else None

    def stop(self):
        if self.process is not None:
            driver.stop(self.process)


# ---------------------------------------------------------------------------------------------
# Phase 1: throughput at N instances


def load(topic, events, sources, start_ms):
    """The preload: deterministic (same seed, same start), so every copy holds the same records."""
    sa("produce", "--topic", topic, "--count", str(events), "--sources", str(sources), "--format", "avro",
       "--span", "10m", "--start-ms", str(start_ms), "--out-of-order-ms", "1000", "--seed", "7", "--seal")


def preload(events, sources, start_ms):
    """A reference copy of the input, and its oracle; every run loads its own copy (deterministic:
    a copy that differed would fail the run's output check)."""
    topic = create_topic(f"bench-{driver.RUN_ID}-scaleout-reference")
    log(f"preloading {events} Avro events over {sources} sources into {topic} ({PARTITIONS} partitions)")
    load(topic, events, sources, start_ms)
    expected = driver.oracle(topic, "avro")
    log(f"oracle: {len(expected)} windows close in {topic}")
    driver.delete_topic(topic)
    return driver.Dataset(topic, "avro", sources, events, expected)


def throughput_run(n, dataset, work, guarantee, timeout, start_ms):
    """N instances join a fresh group on an empty copy of the input and settle; then they are frozen
    (SIGSTOP) while the preload is written, and thawed together (SIGCONT) to drain it: the run measures
    a settled group draining a backlog, not the join (the local broker has
    `group.initial.rebalance.delay.ms=0`, and cooperative-sticky hands partitions over in two rounds).
    A session timeout of 120 s keeps the frozen members in the group."""
    tag = f"n{n}-{time.monotonic_ns()}"
    topic = create_topic(f"bench-{driver.RUN_ID}-scaleout-in-{tag}")
    output = create_topic(f"bench-{driver.RUN_ID}-scaleout-out-{tag}")
    group = f"bench-{driver.RUN_ID}-scaleout-{tag}"
    config = os.path.join(work, "frozen-members.toml")
    with open(config, "w") as f:
        f.write('[kafka.consumer]\n"session.timeout.ms" = "120000"\n')
    run_args = ["--input", topic, "--output", output, "--group", group, "--input-format", "avro",
                "--output-format", "avro", "--guarantee", guarantee, "--config", config]
    instances = [Instance(f"{tag}-i{i}", work, run_args, static=False) for i in range(n)]
    follower = subprocess.Popen([os.environ["FOLLOW_BIN"], "--brokers", driver.BROKERS, "--topic", output,
                                 "--until", str(len(dataset.expected)), "--timeout", f"{timeout}s"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the follower is assigned before the first output can exist
    series, next_scrape = [], 0.0  # (time, [(records consumed, assigned partitions, CPU-s) per instance])
    try:
        for instance in instances:
            instance.start()
        deadline = time.time() + STEADY_TIMEOUT_S
        while not owns_all(instances):
            if time.time() > deadline or not all(instance.alive() for instance in instances):
                raise RuntimeError(f"{n} instances did not settle within {STEADY_TIMEOUT_S} s (logs: {work})")
            time.sleep(0.2)
        time.sleep(2)  # a second round of the cooperative protocol, if any
        for instance in instances:
            instance.process.send_signal(signal.SIGSTOP)
        try:
            load(topic, dataset.events, dataset.sources, start_ms)
        finally:
            for instance in instances:
                instance.process.send_signal(signal.SIGCONT)
        while follower.poll() is None:
            for instance in instances:
                if not instance.alive():
                    follower.kill()
                    raise RuntimeError(f"{instance.name} exited with {instance.process.returncode}; log: {instance.log_path}")
                instance.measure()
            if time.time() >= next_scrape:
                next_scrape = time.time() + 0.5
                series.append((time.time(), [progress(instance) for instance in instances]))
            time.sleep(0.1)
        samples = [instance.measure() for instance in instances]
        out, err = follower.communicate()
        if follower.returncode != 0:
            raise RuntimeError(f"{n} instances: {err.strip()} (logs: {work})")
        # The counters are published once a second: wait for one more publication.
        time.sleep(1.5)
        metrics = [scrape(instance.port) for instance in instances]
    finally:
        for instance in instances:
            instance.stop()
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    last_arrival = int(dict(item.split("=") for item in out.split())["last_arrival_ms"]) / 1000
    firsts = [instance.first_record_s() for instance in instances]
    known = [f for f in firsts if f is not None]
    if not known:
        raise RuntimeError(f"no instance logged its first record; logs: {work}")
    elapsed = last_arrival - min(known)
    windows, problem = driver.check_output(output, "avro", dataset)
    driver.delete_topic(output)
    driver.delete_topic(topic)
    if problem:
        raise RuntimeError(f"{n} instances: output is wrong: {problem} (logs: {work})")
    per_instance = []
    for instance, (cpu, rss, written), m, first in zip(instances, samples, metrics, firsts):
        consumed = m.get("streamagg_records_consumed_total", 0.0)
        per_instance.append({
            "instance": instance.name, "records_consumed": int(consumed),
            "records_replayed": int(m.get("streamagg_records_replayed_total", 0.0)),
            "windows_emitted": int(m.get("streamagg_windows_emitted_total", 0.0)),
            "events_per_s": consumed / elapsed, "cpu_s": cpu, "peak_rss_mib": rss,
            "write_mib": written / 2**20, "first_record_after_s": (first - min(known)) if first else None})
    cpu_total = sum(p["cpu_s"] for p in per_instance)
    settled = settled_rates(series, PARTITIONS)
    for p, last in zip(per_instance, series[-1][1] if series else []):
        p["partitions_at_end"] = int(last[1]) if last else 0
    if settled:
        for p, rate in zip(per_instance, settled["per_instance_events_per_s"]):
            p["settled_events_per_s"] = rate
    return {"instances": n, "settled": settled, "events": dataset.events, "windows": windows, "elapsed_s": elapsed,
            "events_per_s": dataset.events / elapsed, "cpu_s": cpu_total,
            "cpu_s_per_m_events": cpu_total * 1e6 / dataset.events,
            "records_consumed": sum(p["records_consumed"] for p in per_instance),
            "per_instance": per_instance}


def progress(instance):
    """(records consumed, assigned partitions, CPU-s) of a running instance, None before its
    endpoint answers. The processor publishes its counters once a second."""
    try:
        m = scrape(instance.port)
    except OSError:
        return None
    return (m.get("streamagg_records_consumed_total", 0.0), m.get("streamagg_assigned_partitions", 0.0),
            instance.measure()[0])


# ---------------------------------------------------------------------------------------------
# Phase 2: rebalance pause


class PartitionFollower:
    """Timestamps every output record's arrival, by partition: Debian's kcat (its own librdkafka,
    read_committed) prints one partition number per record, unbuffered."""

    def __init__(self, topic):
        self.arrivals = {p: [] for p in range(PARTITIONS)}
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            ["kcat", "-C", "-b", driver.BROKERS, "-t", topic, "-o", "beginning", "-u", "-q", "-f", "%p\n",
             "-X", "isolation.level=read_committed", "-X", "fetch.wait.max.ms=50"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            now = time.time()
            line = line.strip()
            if line.isdigit():
                with self.lock:
                    self.arrivals.setdefault(int(line), []).append(now)

    def snapshot(self):
        with self.lock:
            return {p: list(times) for p, times in self.arrivals.items()}

    def all_emitted_since(self, since):
        with self.lock:
            return all(times and times[-1] >= since for times in self.arrivals.values())

    def stop(self):
        self.process.terminate()
        self.process.wait()


def owns_all(instances):
    """Whether every instance owns partitions and together they own all of them (as published)."""
    owned = [progress(instance) for instance in instances]
    return all(o is not None and o[1] > 0 for o in owned) and sum(o[1] for o in owned) == PARTITIONS


def observe(follower, t0, max_s):
    """Waits until every partition emitted within the last 1.5 s, at least MIN_OBSERVE_S after
    `t0`, at most `max_s`; returns the end of the observation."""
    while True:
        now = time.time()
        if now - t0 >= max_s or (now - t0 >= MIN_OBSERVE_S and follower.all_emitted_since(now - 1.5)):
            return now
        time.sleep(0.1)


def rebalance_run(static, base_instances, rate, sources, work, guarantee, max_observe_s):
    mode = "static" if static else "dynamic"
    topic = create_topic(f"bench-{driver.RUN_ID}-rebalance-{mode}-in")
    output = create_topic(f"bench-{driver.RUN_ID}-rebalance-{mode}-out")
    group = f"bench-{driver.RUN_ID}-rebalance-{mode}"
    run_args = ["--input", topic, "--output", output, "--group", group, "--input-format", "avro",
                "--output-format", "avro", "--guarantee", guarantee, "--window", "1s", "--grace", "0s"]
    with open(os.path.join(work, f"generator-{mode}.log"), "w") as generator_log:
        generator = subprocess.Popen([driver.STREAMAGG, "produce", "--brokers", driver.BROKERS, "--topic", topic,
                                      "--rate", str(rate), "--sources", str(sources), "--format", "avro"],
                                     stdout=subprocess.DEVNULL, stderr=generator_log)
    follower = PartitionFollower(output)
    instances = [Instance(f"{mode}-i{i}", work, run_args, static) for i in range(base_instances + 1)]
    events = []
    try:
        for instance in instances[:-1]:
            instance.start()
        # Steady: every instance owns partitions, all of them together, and every partition emits.
        deadline = time.time() + STEADY_TIMEOUT_S
        while not (owns_all(instances[:-1]) and follower.all_emitted_since(time.time() - 1.5)):
            if time.time() > deadline:
                raise RuntimeError(f"{mode}: not every partition emits within {STEADY_TIMEOUT_S} s (logs: {work})")
            if generator.poll() is not None:
                raise RuntimeError(f"{mode}: the generator exited with {generator.returncode}")
            time.sleep(0.2)
        steady_from = time.time()
        time.sleep(MIN_OBSERVE_S)
        baseline = longest_gaps(follower.snapshot(), steady_from, time.time())
        baseline_gap = max(g[0] for g in baseline.values())
        log(f"{mode}: steady with {base_instances} instances, longest gap of any partition {baseline_gap:.2f} s")
        extra = instances[-1]
        for label in ("join", "restart", "leave"):
            t0 = time.time()
            if label == "join":
                extra.start()
            elif label == "restart":
                extra.stop()
                extra.start()
            else:
                extra.stop()
            t_end = observe(follower, t0, max_observe_s)
            summary = pause_summary(follower.snapshot(), t0, t_end, baseline_gap)
            for instance in instances:
                if instance.process is not None and not instance.alive() and not (label == "leave" and instance is extra):
                    raise RuntimeError(f"{mode}: {instance.name} exited with {instance.process.returncode}; log: {instance.log_path}")
            summary |= {"event": label, "observed_s": t_end - t0, "instances_after":
                        base_instances + (0 if label == "leave" else 1)}
            log(f"{mode} {label}: {summary}")
            events.append(summary)
    finally:
        for instance in instances:
            instance.stop()
        driver.stop(generator)
        follower.stop()
        driver.delete_topic(topic)
        driver.delete_topic(output)
    return {"membership": mode, "baseline_longest_gap_s": baseline_gap, "rate": rate, "sources": sources,
            "instances": base_instances, "events": events}


# ---------------------------------------------------------------------------------------------
# Phase 3: state per open window


def state_probe(sources, events, work, start_ms, timeout):
    """One instance reads `events` events over `sources` sources, all in one minute of event time and
    never sealed, so every window it opens stays open: then its open windows, RocksDB's own size
    estimate, the state dir's bytes and the process's RSS. Consistency is checked (every record
    consumed and aggregated, nothing emitted, as many open windows as distinct sources are expected)."""
    tag = f"probe-k{sources}"
    topic = create_topic(f"bench-{driver.RUN_ID}-{tag}-in")
    output = create_topic(f"bench-{driver.RUN_ID}-{tag}-out")
    log(f"state probe: {events} events over {sources} sources in one window")
    sa("produce", "--topic", topic, "--count", str(events), "--sources", str(sources), "--format", "avro",
       "--span", "1m", "--start-ms", str(start_ms), "--seed", "11")
    group = f"bench-{driver.RUN_ID}-{tag}"
    instance = Instance(tag, work, ["--input", topic, "--output", output, "--group", group, "--input-format",
                                    "avro", "--output-format", "avro", "--guarantee", "at-least-once"], static=False)
    instance.start()
    try:
        deadline = time.time() + timeout
        while sa("lag", "--group", group, "--topic", topic, "--total", capture=True).strip() != "0":
            if not instance.alive():
                raise RuntimeError(f"{tag}: exited with {instance.process.returncode}; log: {instance.log_path}")
            if time.time() > deadline:
                raise RuntimeError(f"{tag}: not caught up within {timeout} s")
            instance.measure()
            time.sleep(0.5)
        time.sleep(2.5)  # one more checkpoint and metrics publication
        m = scrape(instance.port)
        cpu, peak_rss, written = instance.measure()
        state_dir = driver.dir_bytes(instance.state)
    finally:
        instance.stop()
        driver.delete_topic(topic)
        driver.delete_topic(output)
    open_windows = int(m.get("streamagg_open_windows", 0))
    # Sources are drawn uniformly: the expected number of distinct ones among `events` draws.
    distinct = sources * (1 - (1 - 1 / sources) ** events)
    checks = {"records_consumed": (int(m.get("streamagg_records_consumed_total", 0)), events),
              "events_aggregated": (int(m.get("streamagg_events_aggregated_total", 0)), events),
              "windows_emitted": (int(m.get("streamagg_windows_emitted_total", 0)), 0)}
    wrong = {k: v for k, v in checks.items() if v[0] != v[1]}
    if wrong or abs(open_windows - distinct) > 0.01 * distinct:
        raise RuntimeError(f"{tag}: inconsistent (got, expected): {wrong}, open windows {open_windows}, "
                           f"expected {distinct:.0f} ± 1 % (distinct sources among {events} uniform draws)")
    return {"sources": sources, "events": events, "open_windows": open_windows, "peak_rss_mib": peak_rss,
            "state_keys_estimate": int(m.get("streamagg_state_keys", 0)),
            "state_size_bytes": m.get("streamagg_state_size_bytes", 0.0), "state_dir_bytes": state_dir,
            "write_mib": written / 2**20, "cpu_s": cpu}





def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(prog="bench/scale-out", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=4_000_000,
                        help="preloaded events (default 4000000; each run writes its copy while its instances are "
                             "frozen, which must take well under the 120 s session timeout)")
    parser.add_argument("--sources", type=int, default=10_000, help="sources of the preload (default 10000)")
    parser.add_argument("--instances", default="1,2,3", help="instance counts of the throughput phase, or 'none'")
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs per instance count (median kept)")
    parser.add_argument("--guarantee", default="exactly-once", choices=["exactly-once", "at-least-once"],
                        help="delivery guarantee of every instance (default exactly-once: every window exactly once "
                             "across partition moves)")
    parser.add_argument("--rebalance", default="dynamic,static", help="membership modes of the rebalance phase, or 'none'")
    parser.add_argument("--rebalance-instances", type=int, default=2, help="instances before one joins (default 2)")
    parser.add_argument("--rate", type=int, default=20_000, help="live input events/s of the rebalance phase")
    parser.add_argument("--rebalance-sources", type=int, default=1200, help="sources of the live input")
    parser.add_argument("--max-observe", type=int, default=75,
                        help="seconds to watch after each rebalance event at most (> the 45 s session timeout)")
    parser.add_argument("--state-probe", type=int, default=1_000_000,
                        help="sources of the state probe (2× as many events, one window, never closed; "
                             "compared with 1,000 sources), 0 to skip (default 1000000)")
    parser.add_argument("--timeout", type=int, default=600, help="give up on one throughput run after this many seconds")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny input, 1 and 2 instances, outputs checked, no rebalance phase, no timing asserted")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.sources, args.instances, args.repeat, args.timeout = 20_000, 100, "1,2", 1, 300
        args.rebalance, args.state_probe = "none", 0
    counts = [] if args.instances == "none" else [int(n) for n in args.instances.split(",")]
    modes = [] if args.rebalance == "none" else args.rebalance.split(",")
    if any(m not in ("dynamic", "static") for m in modes):
        parser.error("--rebalance takes dynamic, static, both comma-separated, or none")
    work = tempfile.mkdtemp(prefix="streamagg-scaleout-")
    started_at = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    machine = {"started_at": started_at, "cores": os.cpu_count(),
               "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30}
    start_ms = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    throughput, rebalance, failures, state = [], [], [], None
    try:
        if counts:
            dataset = preload(args.events, args.sources, start_ms)
            for n in counts:
                runs = []
                for attempt in range(args.repeat):
                    try:
                        runs.append(throughput_run(n, dataset, work, args.guarantee, args.timeout, start_ms))
                        r = runs[-1]
                        log(f"{n} instances run {attempt + 1}: {r['events_per_s']:,.0f} events/s, "
                            f"{r['cpu_s_per_m_events']:.2f} CPU-s per M events, "
                            f"RSS {[round(p['peak_rss_mib']) for p in r['per_instance']]} MiB, "
                            f"records {[p['records_consumed'] for p in r['per_instance']]}")
                    except Exception as error:  # recorded in the report; the benchmark goes on
                        failures.append(f"{n} instances: {error}")
                        log(f"{n} instances: FAILED: {error}")
                        break
                if runs:
                    runs.sort(key=lambda r: r["events_per_s"])
                    throughput.append(runs[len(runs) // 2] | {"runs": len(runs)})
                else:
                    throughput.append({"instances": n, "error": failures[-1]})
        for mode in modes:
            try:
                rebalance.append(rebalance_run(mode == "static", args.rebalance_instances, args.rate,
                                               args.rebalance_sources, work, args.guarantee, args.max_observe))
            except Exception as error:
                failures.append(f"rebalance {mode}: {error}")
                log(f"rebalance {mode}: FAILED: {error}")
                rebalance.append({"membership": mode, "error": str(error)})
        if args.state_probe:
            try:
                events = 2 * args.state_probe
                small = state_probe(1000, events, work, start_ms, args.timeout)
                state = state_per_window(small, state_probe(args.state_probe, events, work, start_ms, args.timeout))
                log(f"state probe: {state}")
            except Exception as error:
                failures.append(f"state probe: {error}")
                log(f"state probe: FAILED: {error}")
    finally:
        for topic in list(driver.TOPICS):
            driver.delete_topic(topic)
        if not failures:
            subprocess.run(["rm", "-rf", work])
    command = f"bench/scale-out {' '.join(sys.argv[1:])}".strip()
    text = "\n".join(report_lines(args, machine, throughput, rebalance, state, failures, command))
    print(text)
    results_dir = os.path.join(driver.REPO_ROOT, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    name = "scale-out-smoke-latest" if args.smoke else f"scale-out-{started_at.replace(':', '')}"
    with open(os.path.join(results_dir, f"{name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(results_dir, f"{name}.json"), "w") as f:
        json.dump({"kind": "scale-out", "machine": machine, "command": command,
                   "settings": {k: v for k, v in vars(args).items()}, "partitions": PARTITIONS,
                   "throughput": throughput, "rebalance": rebalance, "state": state, "failures": failures}, f, indent=2)
    log(f"report: bench/results/{name}.md and .json")
    if failures:
        log("some runs failed:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
