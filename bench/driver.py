"""The side-by-side benchmark behind `bench/run` (which builds everything and starts the broker first).

Same broker, same machine, same preloaded input, one run: the raw-consume ceiling, streamagg at least
once and exactly once, Kafka Streams, Quix Streams and Apache Flink, each from a fresh consumer group
and state dir, each repeated and reported as the median; every run's output is checked against an
oracle computed here from the input topic; then the cost curve over the number of sources, and the
latency mode.
A benchmark, not a test: it asserts correctness of every output but nothing about timings.

Everything it needs comes from the environment `bench/run` sets: STREAMAGG_BIN, CEILING_BIN,
FOLLOW_BIN, KS_CLASSPATH, QUIX_PYTHON, FLINK_CLASSPATH, BROKERS, REPO_ROOT.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field

ENV = os.environ
STREAMAGG = ENV["STREAMAGG_BIN"]
BROKERS = ENV["BROKERS"]
REPO_ROOT = ENV["REPO_ROOT"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW_MS, GRACE_MS = 60_000, 10_000
SEAL_SOURCE = "streamagg.seal"  # src/produce.rs: --seal's events, whose own windows never close
RUN_ID = f"{int(time.time())}-{os.getpid()}"
# --consumer-property: librdkafka consumer properties given to the ceiling (--property) and to
# streamagg (a config file's [kafka.consumer]), so the two compare like for like.
CONSUMER_PROPERTIES = []
STREAMAGG_CONFIG = []
# --state-root: where streamagg's state dirs go (default: the run's work dir), and those made there.
STATE_ROOT = []
STATE_DIRS = []


def filesystem_of(path):
    """`path`'s file system as `df` names it: its device and type."""
    out = subprocess.run(["df", "--output=source,fstype", path], capture_output=True, text=True).stdout.split()
    return " ".join(out[-2:]) if len(out) >= 4 else "unknown file system"


def new_state_dir(work):
    """A fresh state dir for one streamagg run: under --state-root if given, else under `work`."""
    state = tempfile.mkdtemp(prefix="state-", dir=STATE_ROOT[0] if STATE_ROOT else work)
    STATE_DIRS.append(state)
    return state


def use_consumer_properties(properties, work):
    """From now on, the ceiling and streamagg read with `properties` ((key, value) pairs)."""
    CONSUMER_PROPERTIES[:] = properties
    STREAMAGG_CONFIG.clear()
    if properties:
        config = os.path.join(work, "consumer-properties.toml")
        with open(config, "w") as f:
            f.write("[kafka.consumer]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in properties))
        STREAMAGG_CONFIG.extend(["--config", config])


def log(message):
    print(f"==> {message}", file=sys.stderr, flush=True)


def sa(*args, capture=False, timeout=900):
    """Runs a streamagg subcommand against the benchmark's broker."""
    command = [STREAMAGG, *args, "--brokers", BROKERS]
    result = subprocess.run(command, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


TOPICS = []


def create_topic(name, *configs):
    sa("topics", "create", name, "--partitions", "4", *(arg for c in configs for arg in ("--config", c)))
    TOPICS.append(name)
    return name


def delete_topic(name):
    try:
        sa("topics", "delete", name)
    except Exception as error:  # cleanup is best effort; say so
        log(f"warning: could not delete topic {name}: {error}")
    if name in TOPICS:
        TOPICS.remove(name)


# ---------------------------------------------------------------------------------------------
# Input and its oracle


@dataclass
class Dataset:
    topic: str
    fmt: str
    sources: int
    events: int
    expected: dict  # (source, window_start) -> (count, sum)


def oracle(topic, fmt):
    """The windows every correct processor emits for `topic`, computed here from the records as
    they are on the topic: tumbling epoch-aligned windows, per-partition stream time, a window
    closes once stream time reaches its end + grace; events for closed windows are late (none
    expected in this input) and windows that never close (the seal events' own) are not emitted."""
    lines = sa("consume", "--topic", topic, "--record", "event", "--format", fmt, "--positions",
               "--deadline", "900s", capture=True)
    windows = defaultdict(lambda: [0, 0.0])
    stream_time = defaultdict(lambda: -(2**63))
    late = 0
    closes_at = {}
    for line in lines.splitlines():
        row = json.loads(line)
        partition, event = row["partition"], row["record"]
        timestamp = event["timestamp"]
        start = timestamp - timestamp % WINDOW_MS
        if start + WINDOW_MS + GRACE_MS <= stream_time[partition]:
            late += 1
            continue
        stream_time[partition] = max(stream_time[partition], timestamp)
        key = (event["source"], start)
        windows[key][0] += 1
        windows[key][1] += event["value"]
        closes_at[key] = (partition, start + WINDOW_MS + GRACE_MS)
    if late:
        raise RuntimeError(f"the preload has {late} late events; the benchmark input must have none")
    return {key: tuple(value) for key, value in windows.items()
            if stream_time[closes_at[key][0]] >= closes_at[key][1]}


def preload(fmt, sources, events, start_ms):
    topic = create_topic(f"bench-{RUN_ID}-{fmt}-k{sources}")
    log(f"preloading {events} {fmt} events over {sources} sources into {topic}")
    sa("produce", "--topic", topic, "--count", str(events), "--sources", str(sources),
       "--format", fmt, "--span", "10m", "--start-ms", str(start_ms), "--out-of-order-ms", "1000",
       "--seed", "7", "--seal")
    expected = oracle(topic, fmt)
    log(f"oracle: {len(expected)} windows close in {topic}")
    return Dataset(topic, fmt, sources, events, expected)


def check_output(topic, fmt, dataset):
    """Compares an output topic with the dataset's oracle: the same windows, each exactly once,
    with the same count and (to 1e-9 relative) sum. Returns (windows, problem or None)."""
    lines = sa("consume", "--topic", topic, "--record", "average", "--format", fmt,
               "--deadline", "900s", capture=True).splitlines()
    seen = {}
    for line in lines:
        average = json.loads(line)
        key = (average["source"], average["window_start"])
        if key in seen:
            return len(lines), f"window {key} emitted twice"
        seen[key] = (average["count"], average["sum"])
    if len(seen) != len(dataset.expected):
        missing = len(set(dataset.expected) - set(seen))
        extra = len(set(seen) - set(dataset.expected))
        return len(lines), f"{len(seen)} windows, expected {len(dataset.expected)} ({missing} missing, {extra} unexpected)"
    for key, (count, total) in dataset.expected.items():
        got = seen.get(key)
        if got is None or got[0] != count or abs(got[1] - total) > 1e-9 * max(1.0, abs(total)):
            return len(lines), f"window {key}: got {got}, expected {(count, total)}"
    return len(lines), None


# ---------------------------------------------------------------------------------------------
# Measuring one process


def proc_sample(pid):
    """CPU seconds, peak RSS (MiB) and bytes written to storage of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    write_bytes = 0
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                write_bytes = int(line.split()[1])
    return cpu, rss, write_bytes


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def stop(process, grace=30):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Result:
    events_per_s: float
    cpu_s: float
    rss_mib: float
    write_mib: float = 0.0
    state_mib: float = 0.0
    windows: int = 0
    startup_s: float = 0.0


@dataclass
class Outcome:
    runs: list = field(default_factory=list)
    problem: str = None

    def median(self, attribute):
        values = [getattr(run, attribute) for run in self.runs]
        return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# The systems


def ceiling(dataset, decode, timeout):
    command = [ENV["CEILING_BIN"], "--brokers", BROKERS, "--topic", dataset.topic]
    for key, value in CONSUMER_PROPERTIES:
        command += ["--property", f"{key}={value}"]
    if decode:
        command += ["--decode", dataset.fmt]
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.time() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    out = process.stdout.read()
    err = process.stderr.read()
    stats = dict(item.split("=") for item in out.split())
    records = int(stats.get("records", 0))
    if process.returncode != 0 or records != dataset.events + 4:  # + one seal per partition
        raise RuntimeError(f"the ceiling read {records} records, expected {dataset.events + 4}: {err.strip()[-300:]}")
    if decode and int(stats.get("undecodable", 0)):
        raise RuntimeError(f"the ceiling could not decode {stats['undecodable']} records")
    first, last = int(stats["first_record_ms"]) / 1000, int(stats["last_record_ms"]) / 1000
    # Its own VmHWM: ru_maxrss of a forked child can be this (large) Python process's high-water mark.
    return Result(records / (last - first), usage.ru_utime + usage.ru_stime, int(stats["peak_rss_kib"]) / 1024,
                  startup_s=first - started)


def kcat_ceiling(dataset, group, timeout):
    """Debian's kcat (its own librdkafka, none of streamagg's code or settings) reading the whole
    topic and exiting at its end: as a simple consumer from offset 0, or (`group`) as a group member
    (the join included). Events/s from its first printed record to its exit, like the other
    systems (start-up reported apart); CPU from wait4, RSS sampled from /proc (a forked child's
    ru_maxrss can be this Python process's)."""
    command = ["kcat", "-C", "-b", BROKERS, "-e", "-q", "-f", "%o\n"]
    if group:
        command += ["-G", f"bench-kcat-{os.getpid()}-{time.time_ns()}", "-X", "auto.offset.reset=earliest",
                    dataset.topic]
    else:
        command += ["-t", dataset.topic, "-o", "beginning"]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.time()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        peak, deadline, first = 0.0, started + timeout, None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            # The first record is printed once it arrives (10 ms resolution, like the samples).
            if first is None and os.fstat(out.fileno()).st_size > 0:
                first = time.time()
            if time.time() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"kcat did not reach the end of {dataset.topic} within {timeout} s")
            try:
                with open(f"/proc/{process.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            peak = max(peak, int(line.split()[1]) / 1024)
            except OSError:
                pass
            time.sleep(0.01)
        elapsed = time.time() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        records = sum(1 for line in out if line.strip())
        if process.returncode != 0 or records != dataset.events + 4:  # + one seal per partition
            raise RuntimeError(f"kcat read {records} records, expected {dataset.events + 4}: {err.read().strip()[-300:]}")
    first = first or started + elapsed
    return Result(records / max(started + elapsed - first, 1e-3), usage.ru_utime + usage.ru_stime, peak,
                  startup_s=first - started)


def processor_command(system, guarantee, dataset, output, group, state, extra):
    if system == "streamagg":
        return [STREAMAGG, "run", "--brokers", BROKERS, "--input", dataset.topic, "--output", output,
                "--group", group, "--state-dir", state, "--input-format", dataset.fmt,
                "--output-format", dataset.fmt, "--guarantee", guarantee, *STREAMAGG_CONFIG, *extra]
    if system == "kafka-streams":
        return ["java", "-Xmx1g", "-cp", ENV["KS_CLASSPATH"], "streamagg.bench.Peer", BROKERS,
                dataset.topic, output, group, state,
                "exactly_once_v2" if guarantee == "exactly-once" else "at_least_once"]
    if system == "quix":
        return [ENV["QUIX_PYTHON"], os.path.join(REPO_ROOT, "bench/peers/quix/peer.py"), BROKERS,
                dataset.topic, output, group, state, guarantee]
    if system == "flink":
        # `group` is unique per run: the peer also uses it as its transactional id prefix.
        return ["java", "-Xmx1g", "-cp", ENV["FLINK_CLASSPATH"], "streamagg.bench.flink.Peer", BROKERS,
                dataset.topic, output, group, state, guarantee]
    raise ValueError(system)


def processor_run(system, guarantee, dataset, work, timeout, extra=()):
    """One timed run: from process start until the last expected window is on the output topic
    (read_committed), then the process's CPU, peak RSS and disk writes, then the output check."""
    tag = f"{system}-{guarantee}-{dataset.fmt}-k{dataset.sources}-{time.monotonic_ns()}"
    output = create_topic(f"bench-{RUN_ID}-out-{tag}")
    state = new_state_dir(work)
    log_path = os.path.join(work, f"{tag}.log")
    follower = subprocess.Popen([ENV["FOLLOW_BIN"], "--brokers", BROKERS, "--topic", output,
                                 "--until", str(len(dataset.expected)), "--timeout", f"{timeout}s"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the follower is assigned before the first output can exist
    with open(log_path, "w") as log_file:
        # streamagg logs its first record at info level, as the peers print theirs.
        env = dict(ENV, RUST_LOG=ENV.get("RUST_LOG", "warn,streamagg::processor=info"), STREAMAGG_METRICS_ADDR=ENV.get("STREAMAGG_METRICS_ADDR", "127.0.0.1:0"))
        started = time.time()
        process = subprocess.Popen(processor_command(system, guarantee, dataset, output, f"bench-{RUN_ID}-{tag}", state, extra),
                                   stdout=log_file, stderr=log_file, env=env)
    sample = (0.0, 0.0, 0)
    try:
        while follower.poll() is None:
            if process.poll() is not None:
                follower.kill()
                raise RuntimeError(f"{system} exited with {process.returncode} before its output was complete; log: {log_path}")
            sample = proc_sample(process.pid)
            time.sleep(0.1)
        sample = proc_sample(process.pid)
        out, err = follower.communicate()
        if follower.returncode != 0:
            raise RuntimeError(f"{system} {guarantee}: {err.strip()} (log: {log_path})")
        stats = dict(item.split("=") for item in out.split())
        with open(log_path, errors="replace") as log_file:
            first = re.search(r"first_record_ms=(\d+)", log_file.read())
        if not first:
            raise RuntimeError(f"{system} did not log its first record (first_record_ms=…); log: {log_path}")
        first_record = int(first.group(1)) / 1000
        elapsed = int(stats["last_arrival_ms"]) / 1000 - first_record
        state_bytes = dir_bytes(state)
    finally:
        stop(process)
    windows, problem = check_output(output, "json" if system != "streamagg" else dataset.fmt, dataset)
    delete_topic(output)
    if problem:
        raise RuntimeError(f"{system} {guarantee} output is wrong: {problem} (log: {log_path})")
    cpu, rss, written = sample
    return Result(dataset.events / elapsed, cpu, rss, written / 2**20, state_bytes / 2**20, windows,
                  first_record - started)


def measure(label, repeat, run):
    outcome = Outcome()
    for attempt in range(1, repeat + 1):
        try:
            result = run()
        except Exception as error:  # recorded in the report, and the benchmark goes on
            outcome.problem = str(error)
            log(f"{label} run {attempt}: FAILED: {error}")
            break
        outcome.runs.append(result)
        log(f"{label} run {attempt}: {result.events_per_s:,.0f} events/s, start-up {result.startup_s:.1f} s, {result.cpu_s:.2f} CPU-s, "
            f"{result.rss_mib:.0f} MiB peak RSS, {result.write_mib:.1f} MiB written, {result.windows} windows")
    return outcome


# ---------------------------------------------------------------------------------------------
# Latency mode


def open_loop_capacity(guarantee, seconds, sources, work, extra):
    """The rate this machine sustains end to end with the generator on the same cores: the
    generator unthrottled for about `seconds`, streamagg consuming as it goes; capacity = events /
    (generator start → streamagg's group lag 0). The latency mode's loads are fractions of it, not
    of the drain rate of a preloaded topic (which has the cores to itself)."""
    tag = f"capacity-{guarantee}"
    topic = create_topic(f"bench-{RUN_ID}-{tag}-in")
    output = create_topic(f"bench-{RUN_ID}-{tag}-out")
    state = new_state_dir(work)
    group = f"bench-{RUN_ID}-{tag}"
    log_path = os.path.join(work, f"{tag}.log")
    with open(log_path, "w") as log_file:
        processor = subprocess.Popen(
            processor_command("streamagg", guarantee, Dataset(topic, "avro", sources, 0, {}), output,
                              group, state, extra),
            stdout=log_file, stderr=log_file, env=dict(ENV, RUST_LOG="warn", STREAMAGG_METRICS_ADDR="127.0.0.1:0"))
    try:
        time.sleep(2)  # joined before the first event
        # A first guess of what the generator alone can do, then a count that takes about `seconds`.
        count = max(10_000, int(seconds * 500_000))
        started = time.time()
        sa("produce", "--topic", topic, "--count", str(count), "--sources", str(sources), "--format", "avro",
           timeout=seconds * 20)
        deadline = time.time() + max(60, seconds * 10)
        while True:
            lag = sa("lag", "--group", group, "--topic", topic, "--total", capture=True).strip()
            if lag == "0":
                break
            if time.time() > deadline or processor.poll() is not None:
                raise RuntimeError(f"capacity probe: lag {lag} did not reach 0 (log: {log_path})")
            time.sleep(0.05)
        return count / (time.time() - started)
    finally:
        stop(processor)
        delete_topic(topic)
        delete_topic(output)


# Window ends of a latency run that count as its warm-up (see latency_run).
WARMUP_WINDOWS = 3


def latency_run(guarantee, rate, seconds, sources, work, extra):
    """Open-loop traffic at `rate` events/s with event time = wall clock into a fresh topic;
    streamagg consumes it; the follower reports arrival − (window_end + grace) of every average."""
    tag = f"latency-{guarantee}-{int(rate)}"
    # Stamped with their append time, so the follower can tell what happened before the broker
    # had the record that closed a window from what happened after (streamagg reads event time
    # from the payload, never from the record's timestamp).
    topic = create_topic(f"bench-{RUN_ID}-{tag}-in", "message.timestamp.type=LogAppendTime")
    output = create_topic(f"bench-{RUN_ID}-{tag}-out")
    state = new_state_dir(work)
    window_s = int(extra[extra.index("--window") + 1].rstrip("s")) if "--window" in extra else 60
    grace_ms = int(extra[extra.index("--grace") + 1].rstrip("s")) * 1000 if "--grace" in extra else GRACE_MS
    log_path = os.path.join(work, f"{tag}.log")
    with open(log_path, "w") as log_file:
        processor = subprocess.Popen(
            processor_command("streamagg", guarantee, Dataset(topic, "avro", sources, 0, {}), output,
                              f"bench-{RUN_ID}-{tag}", state, extra),
            stdout=log_file, stderr=log_file, env=dict(ENV, RUST_LOG="warn", STREAMAGG_METRICS_ADDR="127.0.0.1:0"))
    # Windows close only while traffic flows (it carries stream time); a little slack for the last.
    follow_for = seconds + 10
    # The first windows' closes meet a start-up transient (the first writes to fresh topics and
    # connections): reported apart, as the worst of the first WARMUP_WINDOWS window ends.
    follower = subprocess.Popen([ENV["FOLLOW_BIN"], "--brokers", BROKERS, "--topic", output, "--for",
                                 f"{follow_for}s", "--format", "avro", "--grace-ms", str(grace_ms),
                                 "--warmup-ms", str(WARMUP_WINDOWS * window_s * 1000), "--input", topic],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    started = time.time()
    generator = subprocess.run([STREAMAGG, "produce", "--brokers", BROKERS, "--topic", topic,
                                "--rate", str(rate), "--count", str(int(rate * seconds)),
                                "--sources", str(sources), "--format", "avro"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    achieved = int(rate * seconds) / (time.time() - started)
    # After the traffic stops no window closes any more; the follower waits out its time.
    out, err = follower.communicate()
    # Per (window end, partition) latency ranges: where a tail comes from.
    with open(os.path.join(work, f"{tag}-bursts.log"), "w") as bursts:
        bursts.write(err)
    stop(processor)
    delete_topic(topic)
    delete_topic(output)
    if generator.returncode != 0 or follower.returncode != 0 or processor.returncode not in (0, None):
        raise RuntimeError(f"latency run failed: {generator.stderr.strip()[-300:]} {err.strip()} (log: {log_path})")
    stats = dict(item.split("=") for item in out.split())
    return {key: int(value) for key, value in stats.items()} | {"achieved_rate": achieved, "rate": rate}


# ---------------------------------------------------------------------------------------------
# The report


# --fetch-grid: librdkafka's fetch sizing against throughput and memory, for the ceiling and
# streamagg alike. (max.partition.fetch.bytes, queued.min.messages, queued.max.messages.kbytes)
FETCH_GRID = [
    ("1048576", "100000", "65536"),  # librdkafka's defaults (what streamagg ships)
    ("10485760", "100000", "65536"),
    ("10485760", "1000000", "4096"),
    ("10485760", "1000000", "8192"),
    ("10485760", "1000000", "16384"),
    ("4194304", "1000000", "8192"),
]


def fetch_grid(args, work, start_ms):
    """The ceiling and streamagg at-least-once on one Avro dataset under each fetch setting."""
    dataset = preload("avro", args.sources, args.events, start_ms)
    lines = [f"## Fetch sizing (Avro, {args.events:,} events, {args.sources:,} sources, streamagg at-least-once)", "",
             "Each setting is given to the ceiling (`--property`) and to streamagg (`[kafka.consumer]`) alike.", "",
             "| max.partition.fetch.bytes | queued.min.messages | queued.max.messages.kbytes | ceiling events/s | ceiling RSS MiB "
             "| streamagg events/s | vs ceiling | streamagg CPU-s per M | streamagg RSS MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    failures = []
    for setting in FETCH_GRID:
        use_consumer_properties(list(zip(("max.partition.fetch.bytes", "queued.min.messages",
                                          "queued.max.messages.kbytes"), setting)), work)
        c = measure(f"ceiling {setting}", args.repeat, lambda: ceiling(dataset, False, args.timeout))
        r = measure(f"streamagg {setting}", args.repeat,
                    lambda: processor_run("streamagg", "at-least-once", dataset, work, args.timeout))
        failures.extend(f"{setting}: {o.problem}" for o in (c, r) if o.problem)
        lines.append(f"| {int(setting[0]):,} | {int(setting[1]):,} | {int(setting[2]):,} | {fmt_rate(c.median('events_per_s'))} | "
                     f"{c.median('rss_mib'):.0f} | {fmt_rate(r.median('events_per_s'))} | "
                     f"{ratio(r.median('events_per_s'), c.median('events_per_s'))} | "
                     f"{r.median('cpu_s') * 1e6 / args.events:.2f} | {r.median('rss_mib'):.0f} |")
    use_consumer_properties([], work)
    delete_topic(dataset.topic)
    return lines + [""], failures


def flink_versions():
    """'Apache Flink X with flink-connector-kafka Y', from the Flink peer's pom.xml."""
    try:
        with open(os.path.join(REPO_ROOT, "bench/peers/flink/pom.xml")) as f:
            pom = f.read()
        flink = re.search(r"<flink.version>([^<]+)<", pom).group(1)
        connector = re.search(r"<flink.kafka.version>([^<]+)<", pom).group(1)
        return f"Apache Flink {flink} with flink-connector-kafka {connector}"
    except (OSError, AttributeError):
        return "Apache Flink"


def fmt_rate(value):
    return f"{value:,.0f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if b and b == b and a == a else "n/a"


def table(rows, ceiling_rate):
    lines = ["| system | events/s | vs ceiling | start-up s | CPU-s per M events | events per CPU-s | peak RSS MiB | state written MiB | state on disk MiB | windows |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, outcome, events in rows:
        if outcome.problem and not outcome.runs:
            lines.append(f"| {label} | failed: {outcome.problem[:160]} | | | | | | | | |")
            continue
        rate, cpu = outcome.median("events_per_s"), outcome.median("cpu_s")
        lines.append(
            f"| {label} | {fmt_rate(rate)} | {ratio(rate, ceiling_rate)} | {outcome.median('startup_s'):.1f} | {cpu * 1e6 / events:.2f} | "
            f"{fmt_rate(events / cpu) if cpu else 'n/a'} | {outcome.median('rss_mib'):.0f} | {outcome.median('write_mib'):.1f} | "
            f"{outcome.median('state_mib'):.1f} | {outcome.runs[0].windows if outcome.runs else ''} |")
    return lines


def main():
    # SIGTERM/SIGINT end the run through the `finally` below, which deletes the topics it made.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per dataset (default 200000)")
    parser.add_argument("--sources", type=int, default=1000, help="distinct sources of the main datasets")
    parser.add_argument("--repeat", type=int, default=3, help="runs per system; the median is reported")
    parser.add_argument("--peers", default="kafka-streams,quix,flink",
                        help="comma-separated peers (kafka-streams, quix, flink), or 'none'")
    parser.add_argument("--k-curve", default="1000,100000,1000000",
                        help="source counts for the cost curve (streamagg and the ceiling, Avro), or 'none'")
    parser.add_argument("--k-curve-events", type=int, default=None,
                        help="events per dataset of the cost curve (default: --events)")
    parser.add_argument("--latency-seconds", type=int, default=90,
                        help="length of each latency-mode run (0 skips the latency mode)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI mode: tiny input, one run each, 2 s windows in the latency mode")
    parser.add_argument("--timeout", type=int, default=1800, help="give up on one run after this many seconds")
    parser.add_argument("--fetch-grid", action="store_true",
                        help="instead of the comparison: the ceiling and streamagg under each fetch-sizing setting")
    parser.add_argument("--latency-rate", type=float, default=None, metavar="EVENTS_PER_S",
                        help="the latency mode's 100 %% load, instead of probing the open-loop capacity "
                             "(the probe varies by ±10 %% from run to run: pin it to compare runs)")
    parser.add_argument("--state-root", default=None, metavar="DIR",
                        help="make every system's state dirs under DIR (e.g. a disk of its own, as on a "
                             "deployment) instead of the run's temporary dir")
    parser.add_argument("--latency-window", default="1s", metavar="DURATION",
                        help="the latency mode's window, whole seconds (default 1s, grace 1s): every "
                             "window end is one close, so a 90 s run has ~88, enough for a p99 that is "
                             "not the worst close (5s, before 2026-12-05: ~17)")
    parser.add_argument("--consumer-property", action="append", default=[], metavar="KEY=VALUE",
                        help="librdkafka consumer property for streamagg and the ceiling alike (repeatable)")
    args = parser.parse_args()
    if not re.fullmatch(r"[1-9][0-9]*s", args.latency_window):
        parser.error(f"--latency-window takes whole seconds, e.g. 1s, not {args.latency_window}")
    consumer_properties = []
    for item in args.consumer_property:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--consumer-property needs KEY=VALUE, not {item}")
        consumer_properties.append((key, value))
    # Windows that close every few seconds: many independent closes per latency run (see the report).
    latency_extra = ["--window", args.latency_window, "--grace", "1s"]
    if args.smoke:
        args.events, args.sources, args.repeat, args.timeout = 20_000, 100, 1, 300
        args.k_curve = "100,1000"
        args.latency_seconds = 8
        latency_extra = ["--window", "2s", "--grace", "1s"]
    if args.state_root:
        if not os.path.isdir(args.state_root):
            parser.error(f"--state-root {args.state_root} is not a directory")
        STATE_ROOT.append(args.state_root)
    peers = [] if args.peers == "none" else args.peers.split(",")
    k_curve = [] if args.k_curve == "none" else [int(k) for k in args.k_curve.split(",")]
    work = tempfile.mkdtemp(prefix="streamagg-bench-")
    started_at = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    start_ms = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    report = [f"# streamagg side by side ({started_at})", ""]
    use_consumer_properties(consumer_properties, work)
    if CONSUMER_PROPERTIES:
        report += ["Consumer properties for streamagg and the ceiling: "
                   + ", ".join(f"`{k}={v}`" for k, v in CONSUMER_PROPERTIES), ""]
    failures = []

    def section(title, rows, events, ceiling_rate):
        report.extend([f"## {title}", ""] + table(rows, ceiling_rate) + [""])
        failures.extend(f"{title}: {label}: {o.problem}" for label, o, _ in rows if o.problem)

    try:
        if args.fetch_grid:
            lines, grid_failures = fetch_grid(args, work, start_ms)
            report += lines
            failures += grid_failures
        else:
            # 1. The main comparison, JSON: every system reads the same topic.
            datasets = {fmt: preload(fmt, args.sources, args.events, start_ms) for fmt in ("json", "avro")}
            results = {}
            for fmt, dataset in datasets.items():
                timeout = args.timeout
                rows = [("ceiling", measure(f"ceiling {fmt}", args.repeat, lambda: ceiling(dataset, False, timeout))),
                        ("kcat (simple consumer)", measure(f"kcat {fmt}", args.repeat, lambda: kcat_ceiling(dataset, False, timeout))),
                        ("kcat -G (group member)", measure(f"kcat -G {fmt}", args.repeat, lambda: kcat_ceiling(dataset, True, timeout))),
                        (f"ceiling + {fmt} decode", measure(f"ceiling+decode {fmt}", args.repeat, lambda: ceiling(dataset, True, timeout)))]
                systems = [("streamagg", g) for g in ("at-least-once", "exactly-once")]
                if fmt == "json":
                    systems += [(peer, g) for peer in peers for g in ("at-least-once", "exactly-once")]
                for system, guarantee in systems:
                    rows.append((f"{system} {guarantee}", measure(
                        f"{system} {guarantee} {fmt}", args.repeat,
                        lambda: processor_run(system, guarantee, dataset, work, timeout))))
                results[fmt] = dict(rows)
                ceiling_rate = results[fmt]["ceiling"].median("events_per_s")
                section(f"{fmt.upper()} input, {args.events:,} events, {args.sources:,} sources",
                        [(label, outcome, args.events) for label, outcome in rows], args.events, ceiling_rate)

            json_results = results["json"]
            comparisons = []
            for guarantee in ("at-least-once", "exactly-once"):
                ours = json_results[f"streamagg {guarantee}"]
                for peer in peers:
                    theirs = json_results.get(f"{peer} {guarantee}")
                    if not theirs or not theirs.runs or not ours.runs:
                        continue
                    comparisons.append(
                        f"| {guarantee} | {peer} | {ratio(ours.median('events_per_s'), theirs.median('events_per_s'))} | "
                        f"{ratio(theirs.median('cpu_s'), ours.median('cpu_s'))} | {ratio(ours.median('rss_mib'), theirs.median('rss_mib'))} |")
            if comparisons:
                report += ["## streamagg vs the peers (JSON input)", "",
                           "| guarantee | peer | events/s ratio | events per CPU-s ratio | peak RSS ratio |",
                           "|---|---|---:|---:|---:|", *comparisons, ""]

            # 2. Cost over the number of sources.
            for fmt in ("json", "avro"):
                delete_topic(datasets[fmt].topic)
            if k_curve:
                rows = []
                k_events = args.k_curve_events or args.events
                for sources in k_curve:
                    dataset = preload("avro", sources, k_events, start_ms)
                    ceiling_outcome = measure(f"ceiling k={sources}", args.repeat, lambda: ceiling(dataset, False, args.timeout))
                    alo = measure(f"streamagg at-least-once k={sources}", args.repeat,
                                  lambda: processor_run("streamagg", "at-least-once", dataset, work, args.timeout))
                    delete_topic(dataset.topic)
                    rows.append((sources, ceiling_outcome, alo, len(dataset.expected)))
                    failures.extend(f"k={sources}: {o.problem}" for o in (ceiling_outcome, alo) if o.problem)
                report += [f"## Cost over the number of sources (Avro, {k_events:,} events, streamagg at-least-once)", "",
                           "| sources | windows | ceiling events/s | streamagg events/s | vs ceiling | CPU-s per M events | peak RSS MiB | state written MiB |",
                           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
                for sources, ceiling_outcome, alo, windows in rows:
                    c, r = ceiling_outcome.median("events_per_s"), alo.median("events_per_s")
                    report.append(f"| {sources:,} | {windows:,} | {fmt_rate(c)} | {fmt_rate(r)} | {ratio(r, c)} | "
                                  f"{alo.median('cpu_s') * 1e6 / k_events:.2f} | {alo.median('rss_mib'):.0f} | {alo.median('write_mib'):.1f} |")
                report.append("")

            # 3. Latency at 50 % and 80 % of streamagg's measured at-least-once rate (Avro).
            if args.latency_seconds > 0:
                # 100 % = what the generator and streamagg sustain together on these cores.
                if args.latency_rate:
                    capacity = args.latency_rate
                    log(f"open-loop capacity pinned by --latency-rate: {capacity:,.0f} events/s")
                else:
                    try:
                        capacity = open_loop_capacity("at-least-once", 20 if not args.smoke else 1, args.sources,
                                                      work, latency_extra)
                    except Exception as error:
                        failures.append(f"latency capacity probe: {error}")
                        capacity = float("nan")
                    log(f"open-loop capacity (generator + streamagg at-least-once on the same cores): {capacity:,.0f} events/s")
                max_rate = capacity
                report += [f"## Emission latency (open loop, event time = wall clock, {args.sources:,} sources, "
                           f"{args.latency_seconds} s per run, {latency_extra[1]} windows, {latency_extra[3]} grace)", "",
                           "Latency = arrival at a read_committed consumer − (window end + grace), the earliest moment a window can be final. "
                           + (f"Load = a fraction of {fmt_rate(capacity)} events/s, pinned by `--latency-rate`. " if args.latency_rate else
                              f"Load = a fraction of the open-loop capacity, {fmt_rate(capacity)} events/s: what the generator (`streamagg produce`) "
                              "and streamagg at-least-once sustain together on these two cores with the broker (generator unthrottled, "
                              "time to group lag 0). ")
                           + "Short windows so that a run has many closes: every source's window closes at "
                           "once, so a close is one burst and the percentiles need many of them (`closes` counts the distinct "
                           "window ends seen); the time from a close to its output does not depend on the window's length. "
                           f"The first {WARMUP_WINDOWS} window ends of a run are its warm-up (the first writes to fresh topics and "
                           "connections): `steady` columns leave them out, `warm-up max` is their worst; the first columns count every sample. "
                           "Each steady sample is also split at the moment the broker appended the input record that closed its window "
                           "(the input topic stamps append times): `upstream max` is the worst delay before it (the generator, which "
                           "shares the cores, and the broker), `own` columns what came after (fetch, processing, commit, the output's "
                           "way to the reader): streamagg's part.", "",
                           "| guarantee | load | target events/s | achieved events/s | closes | samples | p50 ms | p99 ms | p99.9 ms | max ms "
                           "| steady p50 ms | steady p99 ms | steady max ms | warm-up max ms | upstream max ms | own p50 ms | own p99 ms | own max ms |",
                           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
                for guarantee in ("at-least-once", "exactly-once"):
                    for load in (0.5, 0.8):
                        rate = max(100.0, round(max_rate * load)) if max_rate == max_rate else 100.0
                        try:
                            stats = latency_run(guarantee, rate, args.latency_seconds, args.sources, work, latency_extra)
                        except Exception as error:
                            failures.append(f"latency {guarantee} {load:.0%}: {error}")
                            report.append(f"| {guarantee} | {load:.0%} | {fmt_rate(rate)} | failed: {str(error)[:120]} | | | | | | | | | | | | | | |")
                            continue
                        log(f"latency {guarantee} {load:.0%}: {stats}")
                        if stats["latency_samples"] == 0:
                            failures.append(f"latency {guarantee} {load:.0%}: no window closed")
                        report.append(f"| {guarantee} | {load:.0%} | {fmt_rate(rate)} | {fmt_rate(stats['achieved_rate'])} | "
                                      f"{stats.get('closes', 0):,} | {stats['latency_samples']:,} | {stats['latency_p50_ms']} | {stats['latency_p99_ms']} | "
                                      f"{stats['latency_p999_ms']} | {stats['latency_max_ms']} | {stats['steady_p50_ms']} | "
                                      f"{stats['steady_p99_ms']} | {stats['steady_max_ms']} | {stats['warmup_max_ms']} | "
                                      f"{stats['upstream_max_ms']} | {stats['own_p50_ms']} | {stats['own_p99_ms']} | {stats['own_max_ms']} |")
                report.append("")
    finally:
        for topic in list(TOPICS):
            delete_topic(topic)
        subprocess.run(["rm", "-rf", work, *STATE_DIRS])

    report += ["## How this was measured", "",
               f"- Machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
               f"broker: local Apache Kafka (scripts/kafka, KRaft, 127.0.0.1), every topic 4 partitions.",
               f"- Input: `streamagg produce --count {args.events} --sources K --span 10m --out-of-order-ms 1000 --seed 7 --seal` "
               "(event times spread over 10 minutes, each up to 1 s behind its clock, then one event 15 minutes later per partition so every window closes).",
               f"- Every system runs {args.repeat}× from a fresh consumer group and state dir; the table shows medians. "
               + (f"State dirs are on `{args.state_root}` ({filesystem_of(args.state_root)}). " if args.state_root else
                  "State dirs share the broker's file system. ")
               + "events/s = input events / (the system's first record → the last expected window arrives at a read_committed consumer); "
               "each system reports its first record itself (streamagg's `first record consumed` log line, the peers' `first_record_ms=` line "
               "from their timestamp extractors (Flink's: its Kafka record deserializer), the ceiling's visitor). start-up s = process start → first record (group join, the JVM). "
               "CPU-s, peak RSS (VmHWM) and state written (write_bytes) come from the process's own "
               "/proc entries at that moment, start-up included; the broker is excluded. The ceiling is examples/ceiling.rs (a bare rdkafka BaseConsumer, no group).",
               "- Every run's output is compared with an oracle computed by bench/driver.py from the input topic: the same windows, each once, "
               "with equal counts and sums. A run with wrong output is reported as failed, never timed.",
               "- Kafka Streams 4.1.1 (bench/peers/kafka-streams, one stream thread, 64 MiB cache, `java -Xmx1g`); "
               "Quix Streams (bench/peers/quix, version in requirements.txt); "
               f"{flink_versions()} (bench/peers/flink, DataStream API on a local MiniCluster in the one JVM, `java -Xmx1g`, parallelism 1, "
               "KafkaSource → bounded-out-of-orderness watermark of 10 s (the grace) → 60 s tumbling event-time windows, no allowed lateness → KafkaSink; "
               "embedded RocksDB state backend, incremental checkpoints to the state dir, at-least-once: checkpoints AT_LEAST_ONCE and the sink AT_LEAST_ONCE, "
               "exactly-once: checkpoints EXACTLY_ONCE and the sink EXACTLY_ONCE with Kafka transactions committed at each checkpoint). "
               "All read and write JSON; their commit or checkpoint interval is 1 s like streamagg's checkpoint interval.",
               f"- Command: `bench/run {' '.join(sys.argv[1:])}`", ""]
    text = "\n".join(report)
    print(text)
    results_dir = os.path.join(REPO_ROOT, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    kind = "fetch-grid" if args.fetch_grid else "run"
    name = "smoke-latest.md" if args.smoke else f"{kind}-{started_at.replace(':', '')}.md"
    with open(os.path.join(results_dir, name), "w") as f:
        f.write(text)
    log(f"report: bench/results/{name}")
    if failures:
        log("some runs failed:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
