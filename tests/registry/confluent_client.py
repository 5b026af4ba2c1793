#!/usr/bin/env python3
"""The reference client of the integration tests: Confluent's own serializers (confluent-kafka's
AvroSerializer / AvroDeserializer with its SchemaRegistryClient), through the real broker.

produce: JSON lines on stdin, {"schema": NAME, "key": str, "value": {...}, "partition": int?},
  each value serialized with the writer schema NAME of --schemas (a JSON object NAME -> schema);
  prints the schema id each NAME was registered with as one JSON object.
consume: the values of --topic (read_committed) deserialized, one JSON line each:
  {"key", "schema_id", "value"}; timestamp-millis fields as epoch milliseconds.
"""
import argparse
import datetime
import json
import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def produce(args, registry):
    schemas = json.load(open(args.schemas))
    serializers = {name: AvroSerializer(registry, text) for name, text in schemas.items()}
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True})
    failures = []
    ids = {}
    for line in sys.stdin:
        record = json.loads(line)
        name = record["schema"]
        context = SerializationContext(args.topic, MessageField.VALUE)
        payload = serializers[name](record["value"], context)
        ids[name] = int.from_bytes(payload[1:5], "big")
        extra = {"partition": record["partition"]} if "partition" in record else {}
        producer.produce(args.topic, key=record["key"].encode(), value=payload,
                         on_delivery=lambda err, _msg: err and failures.append(err), **extra)
        producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        sys.exit(f"{left} undelivered, failures: {failures[:3]}")
    print(json.dumps(ids))


def consume(args, registry):
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": f"confluent-it-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([args.topic])
    seen, deadline = 0, time.monotonic() + args.timeout
    while seen < args.count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            sys.exit(f"consume: {message.error()}")
        context = SerializationContext(args.topic, MessageField.VALUE)
        value = deserializer(message.value(), context)
        print(json.dumps({"key": message.key().decode(), "schema_id": int.from_bytes(message.value()[1:5], "big"),
                          "value": plain(value)}), flush=True)
        seen += 1
    consumer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["produce", "consume"])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--schemas")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    registry = SchemaRegistryClient({"url": args.registry})
    (produce if args.command == "produce" else consume)(args, registry)


if __name__ == "__main__":
    main()
