"""The capacity model of docs/capacity.md: from measured costs, how many streamagg instances (cores),
partitions and brokers a deployment needs for a given event rate and number of sources.

    python3 bench/capacity.py [--inputs bench/capacity-inputs.json] [--scale-out bench/results/scale-out-….json]
                              [--rates 1e5,1e6,1e7,1e8] [--sources 1e4,1e6,1e8]
                              [--windows 1m,5m,1h] [--percentiles]

Prints the Markdown table (and the inputs it used, each with its source). The inputs file holds every
number with the results file it comes from; a scale-out results JSON (bench/scale-out), if given,
replaces the per-event CPU and the state per open window with what that run measured. The model is
pure arithmetic (`plan`); nothing here touches a broker.
"""

import argparse
import json
import math
import os
import sys

MIB = 2**20


def load_inputs(path, scale_out=None):
    """{name: value} and {name: source} from the inputs file, overridden by a scale-out results file."""
    with open(path) as f:
        raw = json.load(f)
    values = {k: v["value"] for k, v in raw.items() if isinstance(v, dict) and "value" in v}
    sources = {k: v["source"] for k, v in raw.items() if isinstance(v, dict) and "value" in v}
    if scale_out:
        with open(scale_out) as f:
            results = json.load(f)
        name = os.path.relpath(scale_out)
        one = [r for r in results.get("throughput", []) if r.get("instances") == 1 and "error" not in r]
        if one:
            settled = one[0].get("settled") or {}
            if settled.get("cpu_s_per_m_events"):
                values["cpu_s_per_m_events"] = settled["cpu_s_per_m_events"]
                sources["cpu_s_per_m_events"] = f"{name}: 1 instance, settled ({settled['span_s']:.1f} s of draining)"
            else:
                values["cpu_s_per_m_events"] = one[0]["cpu_s_per_m_events"]
                sources["cpu_s_per_m_events"] = f"{name}: 1 instance, {one[0]['events']:,} events (start-up included)"
            rss_12 = one[0]["per_instance"][0]["peak_rss_mib"]
            extra = results.get("partitions", 12) - values["rss_partitions"]
            if extra > 0 and rss_12 > values["rss_mib"]:
                values["fetch_mib_per_partition"] = (rss_12 - values["rss_mib"]) / extra
                sources["fetch_mib_per_partition"] = (
                    f"{name}: (1 instance's peak RSS on {values['rss_partitions'] + extra} partitions, {rss_12:.0f} MiB, "
                    f"− rss_mib) / {extra} partitions")
        state = results.get("state")
        if state and state.get("rss_bytes_per_open_window"):
            values["memory_bytes_per_open_window"] = state["rss_bytes_per_open_window"]
            sources["memory_bytes_per_open_window"] = f"{name}: state probe, RSS difference / open-window difference"
            values["disk_bytes_per_open_window"] = state["state_dir_bytes_per_open_window"]
            sources["disk_bytes_per_open_window"] = f"{name}: state probe, state dir bytes / open windows"
    return values, sources


def per_window_cpu_s(v):
    """CPU-s per window emitted beyond the per-event cost: the K-curve's extra CPU between its
    fewest- and most-sources rows over the extra windows (same event count)."""
    few, many = v["kcurve_few"], v["kcurve_many"]
    extra_cpu = (many["cpu_s_per_m_events"] - few["cpu_s_per_m_events"]) * v["kcurve_events"] / 1e6
    return extra_cpu / (many["windows"] - few["windows"])


def per_window_write_bytes(v):
    """Bytes the process writes (WAL, flushes, compaction) per window, from the K-curve row where
    nearly every window holds one event, so each is written about once."""
    many = v["kcurve_many"]
    return many["state_written_mib"] * MIB / many["windows"]


def distinct(sources, draws):
    """Expected distinct sources among `draws` events that pick one of `sources` uniformly."""
    return sources * -math.expm1(-draws / sources)


def plan(rate, sources, v, sizes=None, percentiles=False):
    """The deployment for `rate` events/s over `sources` sources, each event from a source picked
    uniformly at random, with windows of `sizes` seconds (default: `window_s` alone; more sizes are
    `--window 1m,5m,1h`) and, with `percentiles`, a quantile sketch in every window. Pure: `v` holds
    the inputs."""
    sizes = sizes or [v["window_s"]]
    windows_per_s = open_windows = window_cpu = 0
    for i, size in enumerate(sizes):
        # A source emits one window per window length in which it sent anything; a window stays
        # open for its length + grace, so the group holds `active × open_factor` of each size.
        active = distinct(sources, rate * size)
        windows_per_s += active / size
        open_windows += active * (1 + v["grace_s"] / size)
        # A larger size's window is merged from closed smaller ones and written once more.
        window_cpu += active / size * (per_window_cpu_s(v) if i == 0 else v["rollup_window_cpu_s"])
    cpu_per_event = v["cpu_s_per_m_events"] + (v["percentile_cpu_s_per_m_events"] if percentiles else 0)
    cpu = rate * cpu_per_event / 1e6 + window_cpu
    # Open windows live in memory (RocksDB holds their checkpoint).
    window_bytes = v["memory_bytes_per_open_window"] + (
        v["percentile_bytes_per_open_window"] if percentiles else 0)
    window_mib = open_windows * window_bytes / MIB
    # One instance's processing is one thread (the poll loop); librdkafka's threads add the rest.
    instances = max(1, math.ceil(cpu / (v["instance_max_cores"] * v["target_utilisation"])),
                    math.ceil(window_mib / v["max_window_mib_per_instance"]))
    event_bytes, output_bytes = v["event_bytes_on_broker"], v["output_bytes_on_broker"]
    ingress = rate * event_bytes + windows_per_s * output_bytes  # produced to the cluster, bytes/s
    partitions_for_rate = math.ceil(rate * event_bytes / (v["partition_mb_s"] * 1e6))
    # Room to double the instances without repartitioning (a partition is read by one instance).
    partitions = max(partitions_for_rate, v["partitions_per_instance_headroom"] * instances, v["min_partitions"])
    brokers = max(v["min_brokers"], math.ceil(ingress / (v["broker_ingress_mb_s"] * 1e6)))
    # Measured at `rss_partitions` partitions and few sources; each further partition adds its
    # fetch queue (bounded by queued.max.messages.kbytes), each open window its bytes.
    partitions_per_instance = math.ceil(partitions / instances)
    fetch_mib = max(0, partitions_per_instance - v["rss_partitions"]) * v["fetch_mib_per_partition"]
    memory_mib = v["rss_mib"] + fetch_mib + window_mib / instances
    # Each checkpoint writes every window (of each size) that changed since the last one, once.
    writes = len(sizes) * distinct(sources, rate * v["checkpoint_interval_s"]) / v["checkpoint_interval_s"] / instances
    return {"rate": rate, "sources": sources, "cpu_cores": cpu, "instances": instances,
            "cores": instances * v["cores_per_instance"], "partitions": partitions, "brokers": brokers,
            "ingress_mb_s": ingress / 1e6, "windows_per_s": windows_per_s,
            "open_windows_per_instance": open_windows / instances, "memory_mib_per_instance": memory_mib,
            "disk_mib_per_instance": open_windows / instances * v["disk_bytes_per_open_window"] / MIB,
            "state_writes_mb_s_per_instance": writes * per_window_write_bytes(v) / 1e6}


def human(n):
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n:g}"


def table(rates, source_counts, v, sizes=None, percentiles=False):
    lines = ["| events/s | sources | windows/s | CPU (cores busy) | instances | cores (requests) | partitions | "
             "brokers | cluster ingress MB/s | open windows per instance | memory per instance MiB | "
             "state on disk per instance MiB | state writes per instance MB/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rate in rates:
        for sources in source_counts:
            p = plan(rate, sources, v, sizes, percentiles)
            lines.append(f"| {human(rate)} | {human(sources)} | {p['windows_per_s']:,.0f} | {p['cpu_cores']:,.1f} | "
                         f"{p['instances']:,} | {p['cores']:,} | {p['partitions']:,} | {p['brokers']:,} | "
                         f"{p['ingress_mb_s']:,.0f} | {p['open_windows_per_instance']:,.0f} | "
                         f"{p['memory_mib_per_instance']:,.0f} | {p['disk_mib_per_instance']:,.0f} | "
                         f"{p['state_writes_mb_s_per_instance']:,.1f} |")
    return lines


def numbers(text):
    return [int(float(x)) for x in text.split(",")]


def durations(text):
    """Window sizes such as `1m,5m,1h` (units s, m, h, d), in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return [int(float(x[:-1]) * units[x[-1]]) for x in text.split(",")]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(prog="bench/capacity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", default=os.path.join(here, "capacity-inputs.json"))
    parser.add_argument("--scale-out", help="a bench/scale-out results JSON whose measurements replace the inputs'")
    parser.add_argument("--rates", default="1e5,1e6,1e7,1e8", help="events/s, comma-separated")
    parser.add_argument("--sources", default="1e4,1e6,1e8", help="numbers of sources, comma-separated")
    parser.add_argument("--windows", help="window sizes as `run --window` takes them, e.g. 1m,5m,1h")
    parser.add_argument("--percentiles", action="store_true", help="with a quantile sketch in every window")
    args = parser.parse_args()
    try:
        v, sources = load_inputs(args.inputs, args.scale_out)
        sizes = durations(args.windows) if args.windows else None
        lines = table(numbers(args.rates), numbers(args.sources), v, sizes, args.percentiles)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as error:
        print(f"bench/capacity.py: error: cannot use the inputs: {error!r}", file=sys.stderr)
        sys.exit(1)
    lines += ["", f"Derived: {per_window_cpu_s(v) * 1e6:.2f} CPU-µs per window emitted, "
              f"{per_window_write_bytes(v):.0f} B written per window-write (K-curve).", "",
              "Inputs:", ""]
    lines += [f"- `{name}` = {json.dumps(v[name])} — {sources[name]}" for name in sorted(sources)]
    try:
        print("\n".join(lines))
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()


if __name__ == "__main__":
    main()
