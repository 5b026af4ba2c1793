"""The chaos soak's measurements, pure: how long after each fault the output resumed, and whether
each processor's resident memory grew over the soak.

Output resuming after a fault at wall time t0 means: every input partition that carries windows
has had a window that closes at or after t0 (its end + grace in event time, which the soak's
generator keeps equal to the wall clock) become visible to a read_committed reader. A fault-free
run needs up to one window plus the checkpoint interval for that (`natural_s`); `resume_s` is the
measured time, `excess_s` the part the fault added beyond the window's own close.
"""

import statistics


def resume_after(t0, arrivals, partition_of, close_ms):
    """(resume_s, natural_s, excess_s) for a fault injected at wall time t0 (seconds), or None if
    some partition never resumed. arrivals: (wall s, source, window_start); partition_of: key ->
    input partition; close_ms(window_start) -> close time in ms."""
    partitions = {p for p in partition_of.values() if p is not None}
    first = {}
    for arrival, source, start in sorted(arrivals):
        partition = partition_of.get((source, start))
        close_s = close_ms(start) / 1000.0
        if partition is None or arrival < t0 or close_s < t0 or partition in first:
            continue
        first[partition] = (arrival, close_s)
    if not partitions or set(first) != partitions:
        return None
    resume = max(arrival for arrival, _ in first.values()) - t0
    natural = max(close for _, close in first.values()) - t0
    excess = max(arrival - close for arrival, close in first.values())
    return round(resume, 2), round(natural, 2), round(excess, 2)


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rss_trend(samples, min_samples=8, growth_limit=1.25, slack_mb=32.0):
    """samples: [(wall s, rss MiB)] of one process lifetime. Mean of the first vs the last quarter;
    'grew' if the last is above both growth_limit x the first and the first + slack_mb. Lifetimes
    with fewer than min_samples samples are too short to judge (verdict None)."""
    if len(samples) < min_samples:
        return {"samples": len(samples), "first_quarter_mb": None, "last_quarter_mb": None, "grew": None}
    quarter = len(samples) // 4
    first = statistics.fmean(rss for _, rss in samples[:quarter])
    last = statistics.fmean(rss for _, rss in samples[-quarter:])
    grew = last > first * growth_limit and last > first + slack_mb
    return {"samples": len(samples), "first_quarter_mb": round(first, 1), "last_quarter_mb": round(last, 1),
            "grew": grew}
