"""The chaos soak's odd input records: payloads streamagg must treat as bad input (one of each
documented kind it can be given as JSON), and now and then a valid one with an unknown field. Pure:
the seeded writer in kafka_io draws from here, the oracle's tests check every kind."""

import json

# A JSON array of an event's fields in order (`["src-1", 1700000000000, 1.0]`) is bad input too:
# serde read it as the struct until the first chaos soak found it (issue 16's closing note).
KINDS = ["not_json", "missing_value", "empty_source", "source_too_long", "timestamp_string",
         "value_string", "value_nan", "not_utf8", "empty", "json_array", "extra_field"]
VALID_KINDS = {"extra_field"}


def malformed_payload(rng, now_ms):
    """(kind, payload): a record streamagg must treat as bad input, or (rarely) an odd valid one."""
    kind = rng.choice(KINDS)
    event = {"source": f"src-{rng.randrange(100)}", "timestamp": now_ms, "value": round(rng.uniform(0, 1000), 3)}
    if kind == "not_json":
        return kind, b"{this is not json"
    if kind == "missing_value":
        del event["value"]
    elif kind == "empty_source":
        event["source"] = ""
    elif kind == "source_too_long":
        event["source"] = "x" * 1025
    elif kind == "timestamp_string":
        event["timestamp"] = str(now_ms)
    elif kind == "value_string":
        event["value"] = "12.5"
    elif kind == "value_nan":
        return kind, f'{{"source":"{event["source"]}","timestamp":{now_ms},"value":NaN}}'.encode()
    elif kind == "not_utf8":
        return kind, b'{"source":"\xff\xfe","timestamp":1,"value":1}'
    elif kind == "empty":
        return kind, b""
    elif kind == "json_array":
        return kind, json.dumps([event["source"], now_ms, event["value"]]).encode()
    elif kind == "extra_field":
        # Valid: unknown fields are ignored. Its own sources, keyed like every event (by source).
        event["source"] = f"chaos-extra-{rng.randrange(5)}"
        event["note"] = {"written_by": "bench/chaos"}
    return kind, json.dumps(event).encode()
