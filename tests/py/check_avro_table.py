"""Checks an events table written from Avro records against what produce_avro.py produced,
with the deltalake reader (independent of sluice). Prints one line per check; exits non-zero
with the first difference.

usage: check_avro_table.py TABLE_URI DEAD_LETTER_URI PRODUCED.jsonl
"""
import decimal
import json
import os
import sys

from deltalake import DeltaTable


def fail(message):
    print("FAIL", message)
    sys.stdout.flush()
    os._exit(1)


def main():
    table_uri, dead_uri, produced_path = sys.argv[1:4]
    produced = {}
    with open(produced_path) as f:
        for line in f:
            r = json.loads(line)
            produced[r["id"]] = r
    rows = DeltaTable(table_uri).to_pyarrow_table().to_pylist()
    ids = [r["id"] for r in rows]
    if len(ids) != len(set(ids)):
        fail(f"{len(ids) - len(set(ids))} ids appear more than once")
    if set(ids) != set(produced):
        missing = sorted(set(produced) - set(ids))[:5]
        extra = sorted(set(ids) - set(produced))[:5]
        fail(f"rows {len(ids)} vs produced {len(produced)}; missing {missing}, extra {extra}")
    for r in rows:
        want = produced[r["id"]]
        got = dict(r)
        got["amount"] = str(got["amount"])
        got["ts"] = int(got["ts"].timestamp() * 1_000_000)
        for k in want:
            a, b = got[k], want[k]
            if k == "amount":
                same = decimal.Decimal(a) == decimal.Decimal(b)
            else:
                same = a == b
            if not same:
                fail(f"id {r['id']}: {k} is {a!r}, produced {b!r}")
        if got["_event_time"] != r["ts"]:
            fail(f"id {r['id']}: event time {got['_event_time']} is not ts {r['ts']}")
    print("rows", len(rows), "equal")
    dead = DeltaTable(dead_uri).to_pyarrow_table().to_pylist()
    print("dead", sorted((d["error_kind"], d["key"].decode()) for d in dead))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
