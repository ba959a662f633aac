"""JSON records with no schema in sluice's config, produced and checked independently of
sluice (confluent-kafka's producer, the deltalake reader).

usage: json_infer.py produce BROKERS TOPIC START COUNT
       json_infer.py check TABLE_URI COUNT

Record i is a deterministic function of i. From record 10,000 on, records carry a new field
`coupon` and a new nested field `geo.zip`; from 15,000 on, a new field `score`. `mixed` is an
integer for even i and a fraction for odd i (one double column); `nothing` is always null (no
column). The check reads the table and compares every record's every value.
"""
import json
import os
import sys
from datetime import datetime, timezone


def record(i):
    r = {
        "id": i,
        "user": f"u{i % 97}",
        "amount": (i % 1000) / 4,
        "mixed": i if i % 2 == 0 else i + 0.5,
        "ok": i % 2 == 0,
        "tags": [f"t{j}" for j in range(i % 3)],
        "geo": {"city": f"c{i % 13}", "lat": (i % 90) + 0.5},
        "ts": "2026-03-01T%02d:%02d:%02dZ" % ((i // 3600) % 24, (i // 60) % 60, i % 60),
        "nothing": None,
    }
    if i >= 10000:
        r["coupon"] = None if i % 5 == 0 else f"cp{i % 7}"
        r["geo"]["zip"] = 10000 + i % 900
    if i >= 15000:
        r["score"] = i % 11
    return r


def fail(message):
    print("FAIL", message)
    sys.stdout.flush()
    os._exit(1)


def produce(brokers, topic, start, count):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "enable.idempotence": True})
    for i in range(start, start + count):
        p.produce(topic, key=f"k{i}".encode(), value=json.dumps(record(i)).encode())
        if i % 5000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        sys.exit("records left unsent")


def same(want, got):
    if isinstance(want, dict):
        return isinstance(got, dict) and all(same(v, got.get(k)) for k, v in want.items())
    if isinstance(want, float) or isinstance(got, float):
        return got is not None and float(want) == float(got)
    return want == got


def check(uri, count):
    from deltalake import DeltaTable

    table = DeltaTable(uri).to_pyarrow_table()
    print("columns", sorted(c for c in table.column_names if not c.startswith("_") and c not in ("event_date", "event_hour")))
    rows = table.to_pylist()
    ids = [r["id"] for r in rows]
    if len(ids) != len(set(ids)) or set(ids) != set(range(count)):
        fail(f"{len(ids)} rows, {len(set(ids))} ids, want ids 0..{count}")
    for r in rows:
        want = record(r["id"])
        for k, v in want.items():
            got = r.get(k)
            if k == "ts":
                got = got.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if v is None:
                if got is not None:
                    fail(f"id {r['id']}: {k} is {got!r}, want null")
            elif not same(v, got):
                fail(f"id {r['id']}: {k} is {got!r}, produced {v!r}")
        if r["id"] < 10000 and (r.get("coupon") is not None or r["geo"].get("zip") is not None):
            fail(f"id {r['id']}: fields it never had are not null")
    print("rows", len(rows), "equal")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        check(sys.argv[2], int(sys.argv[3]))
