"""The chaos soak: a seeded schedule of random faults (schedule.py) against the three-node cluster
(scripts/kafka --cluster) and 2-3 `streamagg run` instances (exactly-once, one group, a state dir
each) while `streamagg produce --rate` writes traffic (out-of-order and late events) and the soak
itself writes malformed records; an independent verifier (verifier.py, oracle.py) follows the
output read_committed and, at the end, holds every window, late copy and DLQ copy to the oracle
computed from the input topic. Writes a JSON and a Markdown report (report.py). Exit 0 only with
zero violations and at least one window checked. See bench/chaos/README.md.

Run with the tools venv's python (confluent_kafka): `"$(ensure_tools_venv)" bench/chaos/soak.py --short`.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
import kafka_io  # noqa: E402
import report  # noqa: E402
from oracle import Oracle, judge, provenance  # noqa: E402
from processes import Cluster, Generator, Processors, Slot  # noqa: E402
from schedule import digest, make_schedule  # noqa: E402
from verifier import LiveVerifier  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHORT_SEED = 16


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=None, help="fault schedule and generator seed (default: random)")
    parser.add_argument("--minutes", type=float, default=30.0, help="planned length of the fault phase")
    parser.add_argument("--faults-per-minute", type=float, default=4.0)
    parser.add_argument("--short", action="store_true",
                        help=f"CI mode: seed {SHORT_SEED}, 8 faults (every kind once), <= 5 min wall with cluster start")
    parser.add_argument("--instances", type=int, default=3, choices=(2, 3))
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=int, default=200, help="generated events per second")
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--window-s", type=int, default=5)
    parser.add_argument("--grace-s", type=int, default=2)
    parser.add_argument("--out-of-order-ms", type=int, default=1500)
    parser.add_argument("--late-fraction", type=float, default=0.01)
    parser.add_argument("--late-by-ms", type=int, default=30000)
    parser.add_argument("--malformed-per-second", type=float, default=2.0)
    parser.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser(
        "~/.cache/streamagg/target")), "release", "streamagg"), help="the streamagg binary")
    parser.add_argument("--results-dir", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--print-schedule", action="store_true", help="print the fault schedule and exit")
    parser.add_argument("--keep-topics", action="store_true", help="leave the topics for a post-mortem (named in the report)")
    args = parser.parse_args(argv)
    if args.short:
        args.seed, args.minutes, args.faults_per_minute = SHORT_SEED, 2.0, 4.0
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    args.fault_count = round(args.minutes * args.faults_per_minute)
    # A broker fault takes its hold plus ~10 s to restart and re-replicate: the gaps make up the rest.
    args.mean_gap_s = max(2.0, 60.0 / max(args.faults_per_minute, 1e-9) - 12.0)
    # Bounded: the fault phase never runs past 1.5x its plan (+1 min); the rest is reported skipped.
    args.fault_phase_cap_s = 150.0 if args.short else args.minutes * 90 + 60
    args.drain_cap_s = 75.0 if args.short else 300.0
    args.final_read_cap_s = 45.0 if args.short else 180.0  # per topic; a read takes seconds
    return args


def log(message):
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def processor_command(args, brokers, topics, group, config_path, index):
    command = [args.bin, "run", "--brokers", brokers, "--input", topics["input"], "--output", topics["output"],
               "--late-topic", topics["late"], "--dlq-topic", topics["dlq"], "--group", group,
               "--input-format", "json", "--output-format", "json", "--window", f"{args.window_s}s",
               "--grace", f"{args.grace_s}s", "--guarantee", "exactly-once", "--metrics-addr", "off",
               "--config", config_path]
    # Instances 0 and 1 keep their name (a StatefulSet pod's); the last one generates an id kept in
    # its state dir, so wiping that dir gives it a new transactional id.
    if index < args.instances - 1:
        command += ["--instance-id", f"chaos-{index}"]
    return command


def main(argv):
    args = parse_args(argv)
    schedule = make_schedule(args.seed, args.fault_count, args.mean_gap_s, args.instances)
    if args.print_schedule:
        print(json.dumps({"seed": args.seed, "digest": digest(schedule), "faults": schedule}, indent=1))
        return 0
    started = time.time()
    # SIGTERM (a CI timeout) unwinds like an error: every finally runs, no broker is left frozen or down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = Cluster(os.path.join(REPO, "scripts", "kafka-cluster"))
    started_cluster = False
    if not cluster.running():
        log("starting the cluster (scripts/kafka --cluster up)")
        cluster.command("up", timeout_s=300)
        started_cluster = True
    brokers = cluster.brokers()
    # A node the previous user of the cluster restarted may still be catching up: a broker fault
    # then would leave a partition with one in-sync replica.
    if kafka_io.wait_fully_replicated(brokers, 120) is None:
        raise RuntimeError("the cluster has under-replicated partitions after 120 s: " + ", ".join(
            kafka_io.under_replicated(brokers)[:10]))
    run_id = secrets.token_hex(4)
    work = tempfile.mkdtemp(prefix=f"chaos-{run_id}-")
    topics = {role: f"chaos-{run_id}-{role}" for role in ("input", "output", "late", "dlq")}
    group = f"chaos-{run_id}"
    result = {"seed": args.seed, "schedule_digest": digest(schedule), "run_id": run_id, "work_dir": work,
              "topics": topics, "group": group, "started_cluster": started_cluster, "args": vars(args)}
    log(f"run {run_id}: seed {args.seed}, {len(schedule)} faults (digest {digest(schedule)}), logs in {work}")
    kafka_io.create_topics(brokers, topics.values(), args.partitions)
    try:
        code = soak(args, schedule, cluster, brokers, topics, group, work, result)
    finally:
        if not args.keep_topics:
            result["cleanup_failures"] = kafka_io.delete_topics(brokers, topics.values(), group)
        if started_cluster:
            cluster.command("down", timeout_s=300)
        result["wall_s"] = round(time.time() - started, 1)
        paths = report.write(result, args.results_dir, "chaos-soak-short" if args.short else "chaos-soak")
        log(f"report: {paths[1]}")
    if code == 0 and not args.keep_topics:
        shutil.rmtree(work, ignore_errors=True)  # state dirs and logs: kept only when something failed
    return code


def soak(args, schedule, cluster, brokers, topics, group, work, result):
    config_path = os.path.join(work, "streamagg.toml")
    with open(config_path, "w") as config:
        # A dead member leaves the group in seconds, not the default 45 s (as the cluster tests).
        config.write('[kafka.consumer]\n"session.timeout.ms" = 6000\n"heartbeat.interval.ms" = 1000\n')
    size_ms, grace_ms = args.window_s * 1000, args.grace_s * 1000
    verifier = LiveVerifier(brokers, topics, args.partitions, size_ms, grace_ms, deadline_s=3 * 3600)
    verifier.start()
    slots = [Slot(i, processor_command(args, brokers, topics, group, config_path, i),
                  os.path.join(work, f"state-{i}"), work) for i in range(args.instances)]
    processors = Processors(slots)
    generator = Generator([args.bin, "produce", "--brokers", brokers, "--topic", topics["input"], "--rate",
                           str(args.rate), "--sources", str(args.sources), "--format", "json",
                           "--out-of-order-ms", str(args.out_of_order_ms), "--late-fraction", str(args.late_fraction),
                           "--late-by-ms", str(args.late_by_ms), "--seed", str(args.seed)], work)
    writer = kafka_io.MalformedWriter(brokers, topics["input"], args.malformed_per_second, args.seed,
                                      deadline_s=3 * 3600)
    try:
        processors.start()
        generator.start()
        writer.start()
        warmup_until = time.time() + 60
        while not verifier.arrivals and time.time() < warmup_until:
            time.sleep(0.5)
        log(f"output flowing: {bool(verifier.arrivals)}; injecting faults")

        injected, phase_start = [], time.time()
        for fault in schedule:
            if time.time() - phase_start > args.fault_phase_cap_s:
                break
            wait_until = time.time() + fault["gap_s"]
            while time.time() < wait_until:
                generator.keep_running()
                time.sleep(0.2)
            log(f"fault {fault['index']}: {fault['kind']} {fault.get('instance', fault.get('broker', fault.get('brokers')))}"
                f" for {fault['hold_s']} s")
            injected.append(faults.inject(fault, cluster, processors, brokers))
            generator.keep_running()
        # Traffic for the planned length at least (a schedule can end early; zero faults: a baseline).
        while time.time() < min(phase_start + args.minutes * 60, phase_start + args.fault_phase_cap_s):
            generator.keep_running()
            time.sleep(0.2)
        time.sleep(3)
        result["fault_phase_s"] = round(time.time() - phase_start, 1)

        log("stopping the writers, sealing every partition, draining")
        result["generator_exit_code_at_stop"] = generator.stop()
        writer.stop.set()
        writer.join(150)
        kafka_io.write_seals(brokers, topics["input"], args.partitions)
        probe = kafka_io.consumer(brokers)
        ends = kafka_io.end_offsets(probe, topics["input"], args.partitions)
        probe.close()
        drain_start = time.time()
        while time.time() - drain_start < args.drain_cap_s and not (verifier.caught_up(ends) and not verifier.missing()):
            time.sleep(1)
        result["drain_s"] = round(time.time() - drain_start, 1)
        result["exit_codes_at_stop"] = processors.stop_all()
        arrivals, partition_of = verifier.snapshot()
        verifier.close()

        log("final check: input, output, late and DLQ topics read whole, read_committed")
        final = final_check(brokers, topics, args.partitions, size_ms, grace_ms, args.final_read_cap_s)
        result.update(report.summarize(args, schedule, injected, slots, generator, writer, verifier, final,
                                       arrivals, partition_of, size_ms, grace_ms))
        ok = result["violation_count"] == 0 and result["windows_checked"] > 0 and final["complete"]
        log(f"{'PASS' if ok else 'FAIL'}: {result['windows_checked']} windows checked, "
            f"{result['violation_count']} violations, {len(injected)} faults")
        return 0 if ok else 1
    finally:  # whatever happened, nothing the soak started outlives it
        writer.stop.set()
        if generator.process is not None:
            generator.stop()
        processors.stop_all()
        verifier.close()


def final_check(brokers, topics, partitions, size_ms, grace_ms, deadline_s):
    oracle = Oracle(size_ms, grace_ms)
    outputs, late, dlq = [], [], []

    def output_record(_p, _o, value, _h):
        try:
            outputs.append(json.loads(value))
        except (TypeError, ValueError):
            outputs.append(value)

    complete = all([
        kafka_io.read_whole(brokers, topics["input"], partitions, lambda p, o, v, h: oracle.feed(p, o, v), deadline_s),
        kafka_io.read_whole(brokers, topics["output"], partitions, output_record, deadline_s),
        kafka_io.read_whole(brokers, topics["late"], partitions, lambda p, o, v, h: late.append(provenance(h)), deadline_s),
        kafka_io.read_whole(brokers, topics["dlq"], partitions, lambda p, o, v, h: dlq.append(provenance(h)), deadline_s),
    ])
    stats, violations = judge(oracle, outputs, late, dlq, size_ms)
    return {"complete": complete, "stats": stats, "violations": violations}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
