"""Changelog topics for the upsert tests, produced and checked by an independent client
(confluent-kafka to produce and read, the deltalake Python package to read the table).

usage:
  changelog.py debezium BROKERS TOPIC CHANGES KEYS OUT.jsonl SEED [FROM TO]
      Debezium-shaped JSON change events on 3 partitions keyed by id (partition = id % 3):
      snapshot reads (r) of half the keys, then creates, updates and deletes (some wrapped
      in the JSON converter's schema/payload envelope, some deletes followed by Debezium's
      tombstone). Writes every produced change with its partition and offset to OUT.jsonl.
      With FROM TO, produces only those changes of the sequence and appends to OUT.jsonl.
  changelog.py compacted BROKERS TOPIC CHANGES KEYS OUT.jsonl SEED
      Plain JSON rows keyed by the id as text, with tombstones, on a compacted topic.
  changelog.py inserts BROKERS TOPIC FIRST_KEY COUNT OUT.jsonl
      One row for each of COUNT new keys from FIRST_KEY (keyed by the id as text), appended
      to OUT.jsonl: changes that touch no existing row, so each flush adds files.
  changelog.py check TABLE CHANGES.jsonl
      The table equals the last state per key of the changes, row for row (values and the
      offset of the change that wrote each row); deleted keys are absent.
  changelog.py check-log TABLE BROKERS TOPIC
      The table equals the last state per key read back from the topic itself (its
      compacted log).
  changelog.py check-versions TABLE CHANGES.jsonl APP_PREFIX
      Every version of the table equals the state after the offsets its progress records.
"""
import json
import os
import random
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from deltalake import DeltaTable

PARTITIONS = 3


def row(rng, key, version):
    return {
        "id": key,
        "name": f"user-{key}-v{version}",
        "balance": round(rng.uniform(-1000, 1000), 2),
        "visits": version,
    }


def produce(brokers, topic, events, out_path, mode="w"):
    """Produces (partition, key bytes, value bytes or None, change) and records offsets."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "acks": "all",
                         "enable.idempotence": True})
    delivered = []

    def done(change):
        def cb(err, msg):
            if err is not None:
                raise RuntimeError(err)
            delivered.append(dict(change, p=msg.partition(), o=msg.offset()))
        return cb

    for partition, key, value, change in events:
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=partition,
                                 on_delivery=done(change))
                break
            except BufferError:
                producer.poll(0.5)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("not every change was delivered")
    with open(out_path, mode) as f:
        for c in delivered:
            f.write(json.dumps(c) + "\n")
    print(len(delivered))


def debezium_events(changes, keys, seed):
    rng = random.Random(seed)
    state = {}
    version = {}
    events = []

    def emit(op, key, before, after, wrapped):
        body = {"before": before, "after": after, "op": op, "ts_ms": 1_772_323_200_000 + len(events),
                "source": {"ts_ms": 1_772_323_100_000 + len(events), "table": "accounts"}}
        value = {"schema": {"type": "struct"}, "payload": body} if wrapped else body
        k = json.dumps({"id": key}).encode()
        change = {"op": op, "id": key, "row": after}
        events.append((key % PARTITIONS, k, json.dumps(value).encode(), change))

    for key in range(0, keys, 2):
        version[key] = 0
        state[key] = row(rng, key, 0)
        emit("r", key, None, state[key], False)
    while len(events) < changes:
        key = rng.randrange(keys)
        wrapped = rng.random() < 0.1
        if key in state:
            if rng.random() < 0.8:
                version[key] += 1
                after = row(rng, key, version[key])
                emit("u", key, state[key], after, wrapped)
                state[key] = after
            else:
                emit("d", key, state.pop(key), None, wrapped)
                if rng.random() < 0.5:
                    k = json.dumps({"id": key}).encode()
                    events.append((key % PARTITIONS, k, None, {"op": "tombstone", "id": key, "row": None}))
        else:
            version[key] = version.get(key, 0) + 1
            state[key] = row(rng, key, version[key])
            emit("c", key, None, state[key], wrapped)
    return events


def compacted_events(changes, keys, seed):
    rng = random.Random(seed)
    version = {}
    events = []
    while len(events) < changes:
        key = rng.randrange(keys)
        k = str(key).encode()
        if key in version and rng.random() < 0.2:
            del version[key]
            events.append((key % PARTITIONS, k, None, {"op": "tombstone", "id": key, "row": None}))
        else:
            version[key] = version.get(key, 0) + 1
            r = row(rng, key, version[key])
            events.append((key % PARTITIONS, k, json.dumps(r).encode(), {"op": "c", "id": key, "row": r}))
    return events


def insert_events(first, count):
    rng = random.Random(first)
    events = []
    for key in range(first, first + count):
        r = row(rng, key, 1)
        events.append((key % PARTITIONS, str(key).encode(), json.dumps(r).encode(),
                       {"op": "c", "id": key, "row": r}))
    return events


def last_state(changes, limit=None):
    """key -> (row, offset) after the changes, in (partition, offset) order; `limit` maps a
    partition to the first offset not applied."""
    state = {}
    for c in sorted(changes, key=lambda c: (c["p"], c["o"])):
        if limit is not None and c["o"] >= limit.get(c["p"], 0):
            continue
        if c["row"] is None:
            state.pop(c["id"], None)
        else:
            state[c["id"]] = (c["row"], c["o"])
    return state


def table_state(dt):
    t = dt.to_pyarrow_table(columns=["id", "name", "balance", "visits", "_kafka_offset"]).to_pylist()
    seen = {}
    for r in t:
        if r["id"] in seen:
            raise SystemExit(f"key {r['id']} is in the table twice")
        seen[r["id"]] = ({"id": r["id"], "name": r["name"], "balance": r["balance"],
                          "visits": r["visits"]}, r["_kafka_offset"])
    return seen


def compare(got, want, what):
    if got == want:
        return
    missing = sorted(set(want) - set(got))[:5]
    extra = sorted(set(got) - set(want))[:5]
    differ = [k for k in sorted(set(got) & set(want)) if got[k] != want[k]][:3]
    raise SystemExit(f"{what}: {len(got)} rows, expected {len(want)}; missing {missing}, "
                     f"extra {extra}, differing {[(k, got[k], want[k]) for k in differ]}")


def read_changes(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_log(brokers, topic):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "changelog-check",
                         "enable.auto.commit": False})
    changes = []
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        consumer.assign([TopicPartition(topic, p, low)])
        pos = low
        while pos < high:
            msg = consumer.poll(5)
            if msg is None or msg.error():
                continue
            pos = msg.offset() + 1
            value = msg.value()
            key = int(msg.key().decode())
            changes.append({"p": p, "o": msg.offset(), "id": key,
                            "row": json.loads(value) if value is not None else None})
    consumer.close()
    return changes


def main():
    cmd = sys.argv[1]
    if cmd in ("debezium", "compacted"):
        brokers, topic, changes, keys, out, seed = sys.argv[2:8]
        make = debezium_events if cmd == "debezium" else compacted_events
        events = make(int(changes), int(keys), int(seed))
        if len(sys.argv) > 9:
            start, end = int(sys.argv[8]), int(sys.argv[9])
            produce(brokers, topic, events[start:end], out, "a")
        else:
            produce(brokers, topic, events, out)
    elif cmd == "inserts":
        brokers, topic, first, count, out = sys.argv[2:7]
        produce(brokers, topic, insert_events(int(first), int(count)), out, "a")
    elif cmd == "check":
        table, changes = sys.argv[2:4]
        want = last_state(read_changes(changes))
        compare(table_state(DeltaTable(table)), want, "table")
        print(f"ok {len(want)} keys")
    elif cmd == "check-log":
        table, brokers, topic = sys.argv[2:5]
        log = read_log(brokers, topic)
        want = {k: v for k, v in last_state(log).items()}
        compare(table_state(DeltaTable(table)), want, "table against the compacted log")
        print(f"ok {len(want)} keys from {len(log)} records in the log")
    elif cmd == "check-versions":
        table, changes, prefix = sys.argv[2:5]
        changes = read_changes(changes)
        latest = DeltaTable(table).version()
        checked = 0
        for v in range(1, latest + 1):
            dt = DeltaTable(table, version=v)
            limit = {p: dt.transaction_version(f"{prefix}{p}") or 0 for p in range(PARTITIONS)}
            compare(table_state(dt), last_state(changes, limit), f"version {v} ({limit})")
            checked += 1
        print(f"ok {checked} versions")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
    # Skip the interpreter's teardown: the deltalake and librdkafka native threads have
    # aborted the process at exit ("terminate called without an active exception") after
    # the work was done and printed.
    sys.stdout.flush()
    os._exit(0)
