"""Checks an events table written from Avro records against what produce_avro.py produced,
with the deltalake reader (independent of sluice). Prints one line per check; exits non-zero
with the first difference.

usage: check_avro_table.py TABLE_URI DEAD_LETTER_URI PRODUCED.jsonl [--evolved-at ID COLUMN]

With --evolved-at, the table must have taken COLUMN in one ADD COLUMN commit that holds no
rows and comes before every row with an id from ID on (the rows that need the column), and
the version before it must lack COLUMN.
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


def check_evolution(uri, first_id, column):
    changes = [h for h in DeltaTable(uri).history() if h["operation"] == "ADD COLUMN"]
    if len(changes) != 1:
        fail(f"{len(changes)} ADD COLUMN commits, want 1")
    v = changes[0]["version"]
    before = DeltaTable(uri, version=v - 1)
    after = DeltaTable(uri, version=v)
    if column in before.schema().to_arrow().names:
        fail(f"version {v - 1} already has {column}")
    if column not in after.schema().to_arrow().names:
        fail(f"version {v} (ADD COLUMN) lacks {column}")
    ids_before = before.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    ids_after = after.to_pyarrow_table(columns=["id"]).column("id").to_pylist()
    if sorted(ids_before) != sorted(ids_after):
        fail(f"the ADD COLUMN commit {v} changed rows")
    if any(i >= first_id for i in ids_after):
        fail(f"rows needing {column} were committed before it (version {v})")
    print(f"evolved at version {v}: {column} added after {len(ids_after)} rows, before the rows needing it")


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
    print("dead_reasons", sorted(set((d["error_kind"], d["error_message"]) for d in dead)))
    if "--evolved-at" in sys.argv:
        at = sys.argv.index("--evolved-at")
        check_evolution(table_uri, int(sys.argv[at + 1]), sys.argv[at + 2])
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
