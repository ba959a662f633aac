"""Produces Avro records with Confluent's own serializer (an independent client, not sluice's
code) against a schema registry, and writes what it produced as JSON lines.

usage: produce_avro.py BROKERS REGISTRY_URL TOPIC COUNT OUT.jsonl [--bad] [--start N]
                       [--version 1|2|3] [--evolving] [--avro-keys]

Record i is a deterministic function of i, so that a test can check every value the table
holds; ids run from --start (default 0). With --bad, two records that are not valid Avro
follow: one value without the Confluent framing and one framed with a schema id the registry
does not know.

--version picks the schema the records are written with (registered as the subject's next
version when new): 1 is SCHEMA; 2 adds a nullable field `channel`, a nullable nested field
`address.country` and an enum symbol RETURNED, and widens `qty` from int to long (with values
beyond int's range); 3 changes `qty` to a string, which a table of longs cannot take. With
--evolving, the JSON lines of version 1 also name version 2's new fields, as null, as a table
that evolved reads them.

With --avro-keys, keys are Avro records too (id, region) from the key serializer, and with
--bad a record with a valid value and a key that is not Avro follows.
"""
import copy
import decimal
import json
import sys
from datetime import datetime, timedelta, timezone

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

SCHEMA = {
    "type": "record",
    "name": "Order",
    "namespace": "sluice.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "user", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
            {"name": "city", "type": "string"},
            {"name": "zip", "type": ["null", "string"], "default": None},
        ]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "qty", "type": "int"},
        {"name": "ok", "type": "boolean"},
    ],
}

KEY_SCHEMA = {
    "type": "record",
    "name": "OrderKey",
    "namespace": "sluice.test",
    "fields": [{"name": "id", "type": "long"}, {"name": "region", "type": "string"}],
}


def key_of(i):
    return {"id": i, "region": f"r{i % 4}"}


def schema_v2():
    s = copy.deepcopy(SCHEMA)
    fields = {f["name"]: f for f in s["fields"]}
    fields["status"]["type"]["symbols"].append("RETURNED")
    fields["address"]["type"]["fields"].append(
        {"name": "country", "type": ["null", "string"], "default": None})
    fields["qty"]["type"] = "long"
    s["fields"].append({"name": "channel", "type": ["null", "string"], "default": None})
    return s


def schema_v3():
    s = copy.deepcopy(SCHEMA)
    for f in s["fields"]:
        if f["name"] == "qty":
            f["type"] = "string"
    return s


BASE = datetime(2026, 3, 1, tzinfo=timezone.utc)


def record(i):
    return {
        "id": i,
        "user": f"u{i % 97}",
        "amount": decimal.Decimal(i % 100000) / 100,
        "status": ["NEW", "PAID", "SHIPPED"][i % 3],
        "ts": BASE + timedelta(milliseconds=i * 1000 + i % 1000),
        "address": {"city": f"c{i % 13}", "zip": None if i % 5 == 0 else f"{10000 + i % 900}"},
        "tags": [f"t{j}" for j in range(i % 4)],
        "note": None if i % 2 else f"n{i}",
        "qty": (i % 7) - 3,
        "ok": i % 2 == 0,
    }


def record_v(i, version):
    r = record(i)
    if version == 2:
        r["status"] = ["NEW", "PAID", "SHIPPED", "RETURNED"][i % 4]
        r["address"]["country"] = None if i % 3 == 0 else f"C{i % 5}"
        r["qty"] = ((i % 7) - 3) * 3_000_000_000
        r["channel"] = None if i % 4 == 0 else f"ch{i % 6}"
    elif version == 3:
        r["qty"] = str(r["qty"])
    return r


def as_json(r):
    out = dict(r)
    out["amount"] = str(r["amount"])
    out["ts"] = int(r["ts"].timestamp() * 1_000_000)
    return out


def main():
    brokers, registry, topic, count, out_path = sys.argv[1:6]
    flags = sys.argv[6:]
    bad = "--bad" in flags
    evolving = "--evolving" in flags
    avro_keys = "--avro-keys" in flags
    start = int(flags[flags.index("--start") + 1]) if "--start" in flags else 0
    version = int(flags[flags.index("--version") + 1]) if "--version" in flags else 1
    count = int(count)
    schema = {1: SCHEMA, 2: schema_v2(), 3: schema_v3()}[version]
    client = SchemaRegistryClient({"url": registry})
    serializer = AvroSerializer(client, json.dumps(schema), conf={"auto.register.schemas": True})
    key_serializer = (AvroSerializer(client, json.dumps(KEY_SCHEMA), conf={"auto.register.schemas": True})
                      if avro_keys else StringSerializer("utf_8"))
    producer = SerializingProducer({
        "bootstrap.servers": brokers,
        "key.serializer": key_serializer,
        "value.serializer": serializer,
        "linger.ms": 20,
        "enable.idempotence": True,
    })
    with open(out_path, "w") as out:
        for i in range(start, start + count):
            r = record_v(i, version)
            producer.produce(topic, key=key_of(i) if avro_keys else f"k{i}", value=r)
            line = as_json(r)
            if avro_keys:
                line["key"] = key_of(i)
            if evolving and version == 1:
                line["channel"] = None
                line["address"] = dict(line["address"], country=None)
            out.write(json.dumps(line) + "\n")
            if i % 5000 == 0:
                producer.poll(0)
    producer.flush(60)
    if bad:
        raw = Producer({"bootstrap.servers": brokers})
        raw.produce(topic, key=b"bad-framing", value=b'{"not": "avro"}')
        raw.produce(topic, key=b"unknown-id", value=b"\x00\x00\x0f\x42\x3f" + b"\x02\x04ab")
        if avro_keys:
            from confluent_kafka.serialization import MessageField, SerializationContext
            value = serializer(record_v(start + count, version),
                               SerializationContext(topic, MessageField.VALUE))
            raw.produce(topic, key=b"not-avro-key", value=value)
        raw.flush(60)
    if producer.flush(60) != 0:
        sys.exit("records left unsent")


if __name__ == "__main__":
    main()
