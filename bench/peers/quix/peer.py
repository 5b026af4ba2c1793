"""The Quix Streams peer of bench/: streamagg's job written the way the Quix Streams documentation
shows it — JSON TrafficEvents keyed by source, event time from the `timestamp` field, tumbling 60 s
windows with 10 s grace, count/sum/min/max, final results only, closed by the partition's
stream time.

    python peer.py BROKERS INPUT OUTPUT GROUP STATE_DIR at-least-once|exactly-once
"""
import sys
import time

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Max, Min, Sum


FIRST_RECORD = []


def event_time(value, headers, timestamp, kind):
    if not FIRST_RECORD:  # start-up is over: the benchmark times processing from here
        FIRST_RECORD.append(True)
        print(f"first_record_ms={int(time.time() * 1000)}", file=sys.stderr, flush=True)
    return int(value["timestamp"])


def main(brokers, input_topic, output_topic, group, state_dir, guarantee):
    app = Application(
        broker_address=brokers,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        state_dir=state_dir,
        commit_interval=1.0,
    )
    events = app.topic(
        input_topic,
        value_deserializer="json",
        timestamp_extractor=event_time,
    )
    averages = app.topic(output_topic, value_serializer="json")
    sdf = app.dataframe(events)
    sdf = (
        sdf.tumbling_window(duration_ms=60_000, grace_ms=10_000)
        .agg(count=Count(), sum=Sum("value"), min=Min("value"), max=Max("value"))
        # Close windows on the partition's stream time like Kafka Streams and streamagg; Quix's
        # default ("key") closes a source's window only when that same source sends a later event.
        .final(closing_strategy="partition")
    )
    sdf = sdf.apply(
        lambda w, key, timestamp, headers: {
            "source": key.decode() if isinstance(key, bytes) else key,
            "window_start": w["start"],
            "window_end": w["end"],
            "count": w["count"],
            "sum": w["sum"],
            "avg": w["sum"] / w["count"],
            "min": w["min"],
            "max": w["max"],
        },
        metadata=True,
    )
    sdf.to_topic(averages)
    app.run()


if __name__ == "__main__":
    main(*sys.argv[1:7])
