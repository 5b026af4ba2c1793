"""What `bench/scale-out` (bench/scale_out.py) makes of its measurements, without I/O: each
partition's output silences across a rebalance event, the state per open window from two probes,
and the Markdown report. Tested by bench/test_scale_out_report.py.
"""

import statistics

PARTITIONS = 12


def longest_gaps(arrivals, start, end):
    """Per partition, the longest silence (s) in [start, end] and when it ended: the gap between
    consecutive arrivals (or `start`/`end` themselves when the partition was silent at either
    edge) that overlaps the interval. Pure: `arrivals` maps partition → sorted arrival times."""
    result = {}
    for partition, times in arrivals.items():
        inside = [t for t in times if start < t <= end]
        before = [t for t in times if t <= start]
        points = [before[-1] if before else start] + inside + [end]
        gap, ended = 0.0, end
        for a, b in zip(points, points[1:]):
            if b - a > gap:
                gap, ended = b - a, b
        result[partition] = (gap, ended)
    return result


def pause_summary(arrivals, t0, t_end, baseline_gap):
    """What an event at `t0` did to output: the longest silence of any partition, how many
    partitions were silent for longer than twice the steady state's longest gap, and when the last of
    those emitted again (s after t0). Pure."""
    gaps = longest_gaps(arrivals, t0, t_end)
    threshold = max(2 * baseline_gap, 0.5)
    affected = {p: g for p, g in gaps.items() if g[0] > threshold}
    silent_at_end = [p for p, times in arrivals.items() if not any(t0 < t <= t_end for t in times)]
    return {"max_silence_s": max((g[0] for g in gaps.values()), default=0.0),
            "median_silence_s": statistics.median([g[0] for g in gaps.values()]) if gaps else 0.0,
            "partitions_paused": len(affected),
            "all_emitting_again_after_s": max((g[1] - t0 for g in affected.values()), default=0.0),
            "partitions_never_emitted": len(silent_at_end)}


def settled_rates(series, partitions, min_span_s=1.0):
    """Throughput once the group has settled: from the first sample at which every instance owns
    partitions, together all `partitions`, with no change of assignment afterwards, to the last
    sample at which the records consumed still grew. `series` is [(time, [(consumed, assigned,
    CPU-s) or None per instance])]. None when the run ended before it settled for `min_span_s`. Pure."""
    def owned(sample):
        return None if any(p is None for p in sample) else tuple(int(p[1]) for p in sample)
    settle = None
    for i, (_, sample) in enumerate(series):
        assignment = owned(sample)
        full = assignment is not None and all(a > 0 for a in assignment) and sum(assignment) == partitions
        if not full:
            settle = None
        elif settle is None or owned(series[settle][1]) != assignment:
            settle = i
    if settle is None:
        return None
    total = [sum(p[0] for p in sample if p) for _, sample in series]
    last = max(range(settle, len(series)), key=lambda i: (total[i], -i))
    (t0, first), (t1, end) = series[settle], series[last]
    span = t1 - t0
    if span < min_span_s:
        return None
    consumed = total[last] - total[settle]
    cpu = sum(p[2] for p in end) - sum(p[2] for p in first)
    return {"settled_after_s": t0 - series[0][0], "span_s": span, "events_per_s": consumed / span,
            "per_instance_events_per_s": [(b[0] - a[0]) / span for a, b in zip(first, end)],
            "assignment": list(owned(first)),
            "cpu_s_per_m_events": cpu * 1e6 / consumed if consumed else None}


def state_per_window(small, large):
    """Bytes per open window from two probes with the same event count: the RSS difference over the
    open-window difference, and the large probe's disk bytes per open window. Pure."""
    extra = large["open_windows"] - small["open_windows"]
    return {"rss_bytes_per_open_window": (large["peak_rss_mib"] - small["peak_rss_mib"]) * 2**20 / extra if extra > 0 else None,
            "state_dir_bytes_per_open_window": large["state_dir_bytes"] / large["open_windows"],
            "state_size_bytes_per_open_window": large["state_size_bytes"] / large["open_windows"],
            "small": small, "large": large}


def rate(value):
    return "—" if value is None else f"{value:,.0f}"


def report_lines(args, machine, throughput, rebalance, state, failures, command):
    lines = [f"# streamagg scale-out ({machine['started_at']})", "",
             f"Machine: {machine['cores']} cores, {machine['memory_gib']:.0f} GiB; broker: local Apache Kafka "
             "(scripts/kafka, KRaft, 127.0.0.1) on the same cores as every instance. "
             f"Input: {PARTITIONS} partitions, guarantee {args.guarantee}.", "",
             "**Machine-bound on this host:** the broker and all instances share the same cores, so total "
             "throughput cannot grow with instances here; adding instances only adds contention. What transfers "
             "to a real deployment is the CPU per event (CPU-s per M events, summed over instances, and how it "
             "changes with more instances: group coordination, replays after a partition moves), peak RSS per "
             "instance, and the rebalance pause (dominated by the group protocol, session timeout and state "
             "rebuild, not by this machine's speed).", ""]
    if throughput:
        lines += [f"## Throughput ({args.events:,} Avro events, {args.sources:,} sources, preloaded)", "",
                  "| instances | events/s, whole run | settled events/s | settled after s (span s) | CPU-s per M events, "
                  "whole run | settled CPU-s per M events | records consumed (incl. replays) | per instance: partitions "
                  "at the end · settled events/s · CPU-s · peak RSS MiB · records | windows |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for row in throughput:
            if "error" in row:
                lines.append(f"| {row['instances']} | failed: {row['error'][:160]} | | | | | | | |")
                continue
            s = row.get("settled")
            parts = "; ".join(f"{p.get('partitions_at_end', '?')} · {rate(p.get('settled_events_per_s'))} · "
                              f"{p['cpu_s']:.2f} · {p['peak_rss_mib']:.0f} · {p['records_consumed']:,}" for p in row["per_instance"])
            settled = (f"{s['events_per_s']:,.0f} | {s['settled_after_s']:.1f} ({s['span_s']:.1f}) | "
                       if s else "not settled | — | ")
            settled_cpu = f"{s['cpu_s_per_m_events']:.2f}" if s and s["cpu_s_per_m_events"] else "—"
            lines.append(f"| {row['instances']} | {row['events_per_s']:,.0f} | {settled}"
                         f"{row['cpu_s_per_m_events']:.2f} | {settled_cpu} | {row['records_consumed']:,} | {parts} | "
                         f"{row['windows']:,} ✓ |")
        lines += ["", "Each run: the instances start together on an empty 12-partition input in a fresh group and "
                  "wait until they own all partitions between them; then they are frozen (SIGSTOP) while this run's copy "
                  "of the preload is written (the same seed and start: the same records), and thawed together (SIGCONT), "
                  "so a settled group drains a backlog (the local broker has `group.initial.rebalance.delay.ms=0`, "
                  "and a cold start would have the first instance drain alone for seconds). `session.timeout.ms` is "
                  "120 s for these runs so the frozen members stay in the group. Whole run = input events / (first "
                  "record consumed by any instance → last expected window on the output, read_committed); CPU-s summed "
                  "over the instances' /proc at that moment (start-up included). Settled = from the first scrape at "
                  f"which every instance owned partitions, all {PARTITIONS} together and unchanged afterwards, until "
                  "records stopped being consumed, from each instance's `streamagg_records_consumed_total`, "
                  "`streamagg_assigned_partitions` and /proc CPU, scraped every 0.5 s (published once a second: ±1 s "
                  "at each end of a span of a few seconds). Records consumed exceed the input when a partition moved "
                  "and its new owner rebuilt its open windows. Every output was compared with the oracle (computed "
                  "from a reference copy): every window exactly once, equal counts and sums.", ""]
    if rebalance:
        lines += [f"## Rebalance pause (live input, {args.rate:,} events/s, {args.rebalance_sources:,} sources, "
                  "1 s windows, 0 s grace)", "",
                  "| membership | event | instances after | longest silence of any partition s | median partition's "
                  "silence s | partitions paused | all emitting again after s | steady longest gap s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for run in rebalance:
            if "error" in run:
                lines.append(f"| {run['membership']} | failed: {run['error'][:160]} | | | | | | |")
                continue
            for e in run["events"]:
                never = f" ({e['partitions_never_emitted']} never emitted again within {e['observed_s']:.0f} s)" \
                    if e["partitions_never_emitted"] else ""
                lines.append(f"| {run['membership']} | {e['event']} | {e['instances_after']} | {e['max_silence_s']:.1f} | "
                             f"{e['median_silence_s']:.1f} | {e['partitions_paused']}{never} | "
                             f"{e['all_emitting_again_after_s']:.1f} | {run['baseline_longest_gap_s']:.2f} |")
        lines += ["", f"{args.rebalance_instances} instances process the live input until every partition emits; then "
                  "a further instance joins, is restarted (SIGTERM, then started again at once with the same instance id "
                  "and state dir) and leaves (SIGTERM). A follower (kcat, read_committed) timestamps each output "
                  "record's arrival per partition. Silence = the longest gap between two arrivals on one partition "
                  "across the event; a partition counts as paused if that gap exceeds twice the steady state's longest "
                  "gap; \"all emitting again\" = event → the last paused partition's first output after its pause. "
                  "librdkafka defaults otherwise (session.timeout.ms 45 s, cooperative-sticky assignor). The pause "
                  "includes the new owner's state rebuild, which grows with window + grace × the partition's rate "
                  "(1 s here; 70 s of input per partition with the default 60 s windows and 10 s grace).", ""]
    if state:
        lines += ["## State per open window (one instance, at-least-once)", "",
                  "| sources | events | open windows | peak RSS MiB | RocksDB size estimate MiB | state dir MiB | written MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for probe in (state["small"], state["large"]):
            lines.append(f"| {probe['sources']:,} | {probe['events']:,} | {probe['open_windows']:,} | {probe['peak_rss_mib']:.0f} | "
                         f"{probe['state_size_bytes'] / 2**20:.1f} | {probe['state_dir_bytes'] / 2**20:.1f} | {probe['write_mib']:.1f} |")
        rss = state["rss_bytes_per_open_window"]
        lines += ["", f"Memory per open window: **{rss:.0f} B** of RSS (difference of the two rows over the difference of "
                  f"open windows); disk: **{state['state_dir_bytes_per_open_window']:.0f} B** per open window in the state dir "
                  f"(WAL and SSTs), {state['state_size_bytes_per_open_window']:.0f} B by RocksDB's own estimate. Each probe "
                  "puts all its events in one minute of event time and never closes it, so every window stays open; "
                  "checked: every record consumed and aggregated, nothing emitted, and as many open windows as distinct sources are "
                  "expected among uniform draws (± 1 %). RocksDB's estimate is SST files plus memtables of both column families.", ""]
    if failures:
        lines += ["## Failures", "", *[f"- {f}" for f in failures], ""]
    lines += ["## How this was measured", "", f"- Command: `{command}`",
              "- Results as JSON beside this file (same name, `.json`); `bench/capacity.py` reads it.", ""]
    return lines
