"""The chaos soak's report: the run's numbers gathered into one dict (summarize) and written as JSON
and Markdown under bench/results/ (write)."""

import json
import os
import subprocess
import time
from collections import Counter

from metrics import percentile, resume_after, rss_trend


def summarize(args, schedule, injected, slots, generator, writer, verifier, final, arrivals, partition_of,
              size_ms, grace_ms):
    per_fault = []
    for record in injected:
        measured = resume_after(record["injected_at"], arrivals, partition_of, lambda s: s + size_ms + grace_ms)
        entry = {k: v for k, v in record.items() if k not in ("injected_at", "undone_at", "down_at")}
        entry["held_for_s"] = round(record["undone_at"] - record["injected_at"], 1)
        entry["resume_s"], entry["natural_s"], entry["excess_s"] = measured or (None, None, None)
        per_fault.append(entry)
    resumes = [f["resume_s"] for f in per_fault if f["resume_s"] is not None]
    rss, rss_by_instance = [], []
    for slot in slots:
        for pid, samples in slot.lifetimes.items():
            rss.append({"instance": slot.index, "pid": pid, **rss_trend(samples)})
        # The whole soak, restarts included (a restart starts low: growth here is judged with that in mind).
        every = sorted(sample for samples in slot.lifetimes.values() for sample in samples)
        rss_by_instance.append({"instance": slot.index, "lifetimes": len(slot.lifetimes), **rss_trend(every)})
    exits = [{"instance": slot.index, "code": e["code"], "cause": e["cause"], "at": round(e["at"], 1)}
             for slot in slots for e in slot.exits]
    violations = final["violations"] + [dict(v, found="live") for v in verifier.violations]
    return {
        "faults_planned": len(schedule),
        "faults_injected": len(injected),
        "faults_not_injected": len(schedule) - len(injected),
        "faults_by_kind": dict(Counter(f["kind"] for f in injected)),
        "fault_errors": [f for f in per_fault if "error" in f],
        "faults": per_fault,
        "resume_max_s": max(resumes) if resumes else None,
        "resume_p50_s": percentile(resumes, 0.5),
        "faults_without_resume": sum(1 for f in per_fault if f["resume_s"] is None),
        "windows_checked": final["stats"]["windows_checked"],
        "check": final["stats"],
        "final_read_complete": final["complete"],
        "violation_count": len(violations),
        "violations_by_kind": dict(Counter(v["kind"] for v in violations)),
        "violations": violations[:300],
        "live_verifier_errors": verifier.errors[:20],
        "rss_by_instance": rss_by_instance,
        "rss": rss,
        "rss_grew": any(r["grew"] for r in rss + rss_by_instance),
        "exit_codes": exits,
        "exit_codes_by_cause": {cause: dict(Counter(str(e["code"]) for e in exits if e["cause"] == cause))
                                for cause in ("fault", "by_itself", "end_of_soak")},
        "generator_exits": generator.exits,
        "malformed_written": writer.written,
        "malformed_delivery_failures": writer.failed,
        "idle_close": "off (lateness depends on input order only)",
        "network_delay": "not injected: this kernel has no netem qdisc (see README)",
        "streamagg_commit": _commit(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return None


def write(result, results_dir, stem):
    os.makedirs(results_dir, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime())
    json_path = os.path.join(results_dir, f"{stem}-{stamp}.json")
    md_path = os.path.join(results_dir, f"{stem}-{stamp}.md")
    with open(json_path, "w") as out:
        json.dump(result, out, indent=1, default=str)
    with open(md_path, "w") as out:
        out.write(markdown(result))
    return json_path, md_path


def markdown(r):
    args = r.get("args", {})
    lines = [
        f"# Chaos soak {r.get('finished_at', '')}",
        "",
        f"Reproduce: `bench/chaos/soak.py --seed {r['seed']} --minutes {args.get('minutes')} "
        f"--faults-per-minute {args.get('faults_per_minute')}`" + (" (`--short`)" if args.get("short") else ""),
        "",
        f"- streamagg commit {r.get('streamagg_commit')}; seed {r['seed']}, schedule digest `{r['schedule_digest']}`",
        f"- wall {r.get('wall_s')} s (fault phase {r.get('fault_phase_s')} s, drain {r.get('drain_s')} s); "
        f"{args.get('instances')} instances, {args.get('partitions')} partitions, {args.get('rate')} events/s, "
        f"windows {args.get('window_s')} s + grace {args.get('grace_s')} s; idle close {r.get('idle_close')}",
        f"- network delay: {r.get('network_delay')}",
        f"- **violations: {r.get('violation_count')}**; windows checked {r.get('windows_checked')} of "
        f"{r.get('check', {}).get('windows_expected')} (final read complete: {r.get('final_read_complete')})",
        f"- input: {r.get('check', {}).get('input_counted')} counted, {r.get('check', {}).get('input_late')} late, "
        f"{r.get('check', {}).get('input_invalid')} invalid; late copies {r.get('check', {}).get('late_copies')}, "
        f"DLQ copies {r.get('check', {}).get('dlq_copies')}",
        f"- faults: {r.get('faults_injected')} injected of {r.get('faults_planned')} planned: {r.get('faults_by_kind')}",
        f"- output resumed after a fault: p50 {r.get('resume_p50_s')} s, max {r.get('resume_max_s')} s "
        f"({r.get('faults_without_resume')} faults without a measurable resume)",
        f"- processor exit codes (code: times): after an injected kill/stop {r.get('exit_codes_by_cause', {}).get('fault')}, "
        f"by themselves {r.get('exit_codes_by_cause', {}).get('by_itself')} (each restarted), at the end "
        f"{r.get('exit_codes_by_cause', {}).get('end_of_soak')}; generator restarts {len(r.get('generator_exits', []))}",
        f"- RSS grew in some lifetime: {r.get('rss_grew')}",
        "",
        "| # | fault | target | hold s | resume s | natural s | excess s | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in r.get("faults", []):
        target = f.get("instance", f.get("broker", f.get("brokers")))
        note = f.get("error") or ("target not running" if f.get("target_was_running") is False else "")
        lines.append(f"| {f['index']} | {f['kind']} | {target} | {f['hold_s']} | {f['resume_s']} | "
                     f"{f['natural_s']} | {f['excess_s']} | {note} |")
    lines += ["", "RSS per instance over the whole soak (every lifetime's samples in time order):", "",
              "| instance | lifetimes | samples | RSS first quarter MiB | RSS last quarter MiB | grew |",
              "|---|---|---|---|---|---|"]
    for row in r.get("rss_by_instance", []):
        lines.append(f"| {row['instance']} | {row['lifetimes']} | {row['samples']} | {row['first_quarter_mb']} | "
                     f"{row['last_quarter_mb']} | {row['grew']} |")
    lines += ["", "RSS per process lifetime:", "",
              "| instance | pid | samples | RSS first quarter MiB | RSS last quarter MiB | grew |",
              "|---|---|---|---|---|---|"]
    for row in r.get("rss", []):
        lines.append(f"| {row['instance']} | {row['pid']} | {row['samples']} | {row['first_quarter_mb']} | "
                     f"{row['last_quarter_mb']} | {row['grew']} |")
    if r.get("violations"):
        lines += ["", f"## Violations (by kind: {r.get('violations_by_kind')}; the first 50)", ""]
        lines += [f"- `{json.dumps(v, default=str)[:400]}`" for v in r["violations"][:50]]
    return "\n".join(lines) + "\n"
