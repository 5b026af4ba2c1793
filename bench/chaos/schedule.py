"""The chaos soak's fault schedule: a pure function of (seed, count, mean gap, instances). The same
arguments always give the same list of faults (kind, target, hold times, pause before it), so a soak
is reproduced by its seed; the soak runs the list in order, one fault at a time.

A fault is held for `hold_s` (process down / frozen, broker down / frozen) and then undone; the next
fault starts `gap_s` after the previous one was undone. Only "two_brokers_down" takes two brokers
away at once; every other broker fault touches one.
"""

import hashlib
import json
import random

# kind -> (weight, what it does)
KINDS = {
    "processor_kill9": (3, "kill -9 one processor instance, restart it on its state dir after hold_s"),
    "processor_kill9_wipe": (2, "kill -9 one processor instance, delete its state dir, restart it after hold_s"),
    "processor_sigterm": (2, "SIGTERM one processor instance (clean stop), restart it after hold_s"),
    "processor_pause": (2, "SIGSTOP one processor instance for hold_s, then SIGCONT"),
    "broker_kill9": (3, "kill -9 one broker, start it again after hold_s"),
    "broker_pause": (2, "SIGSTOP one broker for hold_s, then SIGCONT"),
    "two_brokers_down": (1, "kill -9 two brokers (below min.insync.replicas), start both after hold_s"),
}

HOLD_S = {
    "processor_kill9": (1.0, 4.0),
    "processor_kill9_wipe": (1.0, 4.0),
    "processor_sigterm": (1.0, 4.0),
    # Beyond the 6 s session timeout and the 10 s transaction timeout at the long end: a zombie.
    "processor_pause": (2.0, 14.0),
    "broker_kill9": (3.0, 10.0),
    "broker_pause": (3.0, 12.0),
    "two_brokers_down": (5.0, 12.0),
}

BROKERS = (1, 2, 3)


def make_schedule(seed, count, mean_gap_s, instances):
    """`count` faults; every kind at least once if count allows (in a seeded order), then by weight."""
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    rng.shuffle(kinds)
    picks = kinds[:count]
    weighted = [kind for kind in sorted(KINDS) for _ in range(KINDS[kind][0])]
    picks += [rng.choice(weighted) for _ in range(count - len(picks))]
    faults = []
    for index, kind in enumerate(picks):
        low, high = HOLD_S[kind]
        fault = {
            "index": index,
            "kind": kind,
            "hold_s": round(rng.uniform(low, high), 1),
            "gap_s": round(max(2.0, rng.uniform(0.5, 1.5) * mean_gap_s), 1),
        }
        if kind.startswith("processor_"):
            fault["instance"] = rng.randrange(instances)
        elif kind == "two_brokers_down":
            fault["brokers"] = sorted(rng.sample(BROKERS, 2))
        else:
            fault["broker"] = rng.choice(BROKERS)
        faults.append(fault)
    return faults


def digest(faults):
    """A short fingerprint of a schedule: equal digests, equal schedules."""
    return hashlib.sha256(json.dumps(faults, sort_keys=True).encode()).hexdigest()[:16]
