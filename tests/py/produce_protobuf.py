"""Produces Protobuf records with Confluent's own serializer (an independent client, not
sluice's code) against a schema registry, and writes what it produced as JSON lines in the
shape tests/py/check_avro_table.py compares.

usage: produce_protobuf.py BROKERS REGISTRY_URL TOPIC COUNT OUT.jsonl [--bad]

The message is built at run time from a FileDescriptorProto (no protoc): int64, string, double,
an enum, a google.protobuf.Timestamp, a nested message, a repeated string, a
google.protobuf.StringValue (null when unset), an int32 and a bool. With --bad, a value without
the Confluent framing and one framed with an unknown schema id follow.
"""
import json
import sys

from confluent_kafka import Producer, SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import StringSerializer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import timestamp_pb2, wrappers_pb2  # noqa: F401 (registers the files)

F = descriptor_pb2.FieldDescriptorProto
STATUS = ["NEW", "PAID", "SHIPPED"]
BASE_S = 1772323200  # 2026-03-01T00:00:00Z


def order_class():
    fdp = descriptor_pb2.FileDescriptorProto(
        name="sluice/test/order.proto", package="sluice.test", syntax="proto3")
    fdp.dependency.extend(["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"])
    m = fdp.message_type.add(name="Order")
    address = m.nested_type.add(name="Address")
    address.field.add(name="city", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    address.field.add(name="zip", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    status = m.enum_type.add(name="Status")
    for n, s in enumerate(STATUS):
        status.value.add(name=s, number=n)
    fields = [
        ("id", F.TYPE_INT64, None, F.LABEL_OPTIONAL),
        ("user", F.TYPE_STRING, None, F.LABEL_OPTIONAL),
        ("amount", F.TYPE_DOUBLE, None, F.LABEL_OPTIONAL),
        ("status", F.TYPE_ENUM, ".sluice.test.Order.Status", F.LABEL_OPTIONAL),
        ("ts", F.TYPE_MESSAGE, ".google.protobuf.Timestamp", F.LABEL_OPTIONAL),
        ("address", F.TYPE_MESSAGE, ".sluice.test.Order.Address", F.LABEL_OPTIONAL),
        ("tags", F.TYPE_STRING, None, F.LABEL_REPEATED),
        ("note", F.TYPE_MESSAGE, ".google.protobuf.StringValue", F.LABEL_OPTIONAL),
        ("qty", F.TYPE_INT32, None, F.LABEL_OPTIONAL),
        ("ok", F.TYPE_BOOL, None, F.LABEL_OPTIONAL),
    ]
    for number, (name, kind, type_name, label) in enumerate(fields, start=1):
        f = m.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            f.type_name = type_name
    pool = descriptor_pool.Default()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sluice.test.Order"))


def record(i):
    return {
        "id": i,
        "user": f"u{i % 97}",
        "amount": (i % 100000) / 8,
        "status": STATUS[i % 3],
        "ts_ms": (BASE_S * 1000) + i * 1000 + i % 1000,
        "address": {"city": f"c{i % 13}", "zip": (i % 900) - 450},
        "tags": [f"t{j}" for j in range(i % 4)],
        "note": None if i % 2 else f"n{i}",
        "qty": (i % 7) - 3,
        "ok": i % 2 == 0,
    }


def main():
    brokers, registry, topic, count, out_path = sys.argv[1:6]
    bad = "--bad" in sys.argv[6:]
    Order = order_class()
    client = SchemaRegistryClient({"url": registry})
    serializer = ProtobufSerializer(Order, client, {"use.deprecated.format": False})
    producer = SerializingProducer({
        "bootstrap.servers": brokers,
        "key.serializer": StringSerializer("utf_8"),
        "value.serializer": serializer,
        "linger.ms": 20,
        "enable.idempotence": True,
    })
    with open(out_path, "w") as out:
        for i in range(int(count)):
            r = record(i)
            o = Order(id=r["id"], user=r["user"], amount=r["amount"], status=i % 3,
                      tags=r["tags"], qty=r["qty"], ok=r["ok"])
            o.ts.FromMilliseconds(r["ts_ms"])
            o.address.city = r["address"]["city"]
            o.address.zip = r["address"]["zip"]
            if r["note"] is not None:
                o.note.value = r["note"]
            producer.produce(topic, key=f"k{i}", value=o)
            want = dict(r)
            del want["ts_ms"]
            want["ts"] = r["ts_ms"] * 1000
            want["amount"] = repr(r["amount"])
            out.write(json.dumps(want) + "\n")
            if i % 5000 == 0:
                producer.poll(0)
    if producer.flush(60) != 0:
        sys.exit("records left unsent")
    if bad:
        raw = Producer({"bootstrap.servers": brokers})
        raw.produce(topic, key=b"bad-framing", value=b'{"not": "protobuf"}')
        raw.produce(topic, key=b"unknown-id", value=b"\x00\x00\x0f\x42\x3f\x00\x08\x01")
        if raw.flush(60) != 0:
            sys.exit("records left unsent")


if __name__ == "__main__":
    main()
