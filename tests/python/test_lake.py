"""The flow lake (flowmap-lake) read without flowmap: pyarrow and DuckDB.

A lake written by the `write_sample` example (the lake's job model: the job's delivery and commit
rules) is read with pyarrow (schema, types, every value against the rows the example says it
wrote) and queried with DuckDB: the README's SQL, run as written, must give what plain Python
computes from the same rows. A writer killed mid-run and restarted leaves no duplicate row
(checked with DuckDB) and no partial file.
"""
import datetime
import json
import os
import re
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FLOWMAP_LAKE_SAMPLE", ROOT / "target" / "debug" / "examples" / "write_sample"))
README = ROOT / "lake" / "README.md"
README_LAKE = "/var/lib/flowmap/lake"

FLOW_TYPES = {
    "flow_id": "uint64", "exporter": "string", "incarnation": "uint64", "local_ip": "string",
    "local_port": "uint16", "remote_ip": "string", "remote_port": "uint16", "direction": "string",
    "start_ns": "timestamp[ns, tz=UTC]", "end_ns": "timestamp[ns, tz=UTC]", "open": "bool",
    "start_unobserved": "bool", "connect_error": "uint32", "bytes_sent": "uint64", "bytes_received": "uint64",
    "segments_sent": "uint64", "segments_received": "uint64", "retransmits": "uint32", "srtt_us": "uint32",
    "local_workload": "string", "local_scope": "string", "local_source": "string", "remote_workload": "string",
    "evidence": "string", "reason": "string", "counted": "bool", "verification": "string",
}
FLOW_NULLABLE = {"local_workload", "remote_workload", "evidence", "reason"}
EDGE_TYPES = {
    "bucket_start": "timestamp[ns, tz=UTC]", "bucket_s": "uint32", "client": "string", "server": "string",
    "server_port": "uint16", "protocol": "string", "emitted_at": "timestamp[ns, tz=UTC]",
    **{c: "uint64" for c in ("connections", "bytes_client_to_server", "bytes_server_to_client", "segments",
                             "retransmits", "failed_connects", "verified", "disagreements", "one_sided")},
    "rtt_p50_us": "double", "rtt_p90_us": "double", "rtt_p99_us": "double", "rtt_sketch": "binary",
}
EDGE_NULLABLE = {"rtt_p50_us", "rtt_p90_us", "rtt_p99_us", "rtt_sketch"}
FLOW_KEY = ("flow_id", "end_ns", "open")
EDGE_KEY = ("bucket_start", "client", "server", "server_port", "protocol", "emitted_at")


@pytest.fixture(scope="module")
def sample_bin():
    if "FLOWMAP_LAKE_SAMPLE" not in os.environ:
        # The whole workspace, as the Rust tests build it (scripts/test has, so this is a
        # no-op there; one package alone would rebuild dependencies with other features).
        subprocess.run(["cargo", "build", "-q", "--workspace", "--all-targets"], cwd=ROOT, check=True)
    assert BIN.exists(), f"{BIN} is missing"
    return BIN


def expected_rows(path):
    rows = {"flows": [], "edges": []}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows[row.pop("table")].append(row)
    return rows


@pytest.fixture(scope="module")
def lake(sample_bin, tmp_path_factory):
    """A lake of about the last 100 minutes (3,000 messages 2 s apart, ending about now)."""
    tmp = tmp_path_factory.mktemp("lake")
    out = subprocess.run([str(sample_bin), "--lake", str(tmp / "lake"), "--expected", str(tmp / "rows.jsonl")],
                         check=True, capture_output=True, text=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["flows"]["rows_written"] == summary["flow_rows"] == 12000
    return tmp / "lake", expected_rows(tmp / "rows.jsonl")


def read_table(lake_dir, table):
    """Every row of a table with pyarrow (Hive partitions), timestamps as ns integers."""
    t = ds.dataset(str(lake_dir / table), format="parquet", partitioning="hive").to_table()
    for i, field in enumerate(t.schema):
        if pa.types.is_timestamp(field.type):
            t = t.set_column(i, field.name, t[field.name].cast(pa.int64()))
    rows = t.to_pylist()
    for r in rows:
        if isinstance(r.get("rtt_sketch"), bytes):
            r["rtt_sketch"] = r["rtt_sketch"].hex()
    return rows


def check_schema(lake_dir, table, types, nullable):
    schema = ds.dataset(str(lake_dir / table), format="parquet", partitioning="hive").schema
    got = {f.name: (str(f.type), f.nullable) for f in schema if f.name not in ("dt", "hour")}
    assert got == {name: (t, name in nullable) for name, t in types.items()}
    assert [f.name for f in schema][:len(types)] == list(types), "column order"


def test_pyarrow_reads_the_schema_and_every_value(lake):
    lake_dir, expected = lake
    check_schema(lake_dir, "flows", FLOW_TYPES, FLOW_NULLABLE)
    check_schema(lake_dir, "edges", EDGE_TYPES, EDGE_NULLABLE)
    for table, key in (("flows", FLOW_KEY), ("edges", EDGE_KEY)):
        rows = read_table(lake_dir, table)
        time_col = "start_ns" if table == "flows" else "bucket_start"
        for r in rows:
            # Each row sits in the partition of its own event time (UTC).
            dt, hour = r.pop("dt"), r.pop("hour")
            secs = r[time_col] // 10**9
            utc = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
            assert (str(dt), int(hour)) == (utc.strftime("%Y-%m-%d"), utc.hour)
        by_key = {tuple(r[k] for k in key): r for r in rows}
        assert len(by_key) == len(rows), f"{table}: a key twice"
        want = {tuple(r[k] for k in key): r for r in expected[table]}
        assert by_key == want, table
    # The sample exercises nulls, IPv6 and every verification value.
    flows = expected["flows"]
    assert any(r["remote_workload"] is None for r in flows) and any(":" in r["remote_ip"] for r in flows)
    assert {r["verification"] for r in flows} == {"agree", "disagree", "peer_only", "one_sided"}


def readme_sql():
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 3, "the README's three DuckDB examples"
    return blocks


def run_at_fixed_now(lake_dir, sql):
    """Runs README SQL as written (only the lake's path replaced) in one transaction, so `now()`
    is one instant, returned beside the rows (ns)."""
    con = duckdb.connect()
    con.execute("BEGIN")
    now_us = con.execute("SELECT epoch_us(now())").fetchone()[0]
    rows = con.execute(sql.replace(README_LAKE, str(lake_dir))).fetchall()
    con.execute("COMMIT")
    return now_us * 1000, rows


def test_readme_sql_who_called_payments(lake):
    lake_dir, expected = lake
    edges_sql, flows_sql, reasons_sql = readme_sql()

    now_ns, got = run_at_fixed_now(lake_dir, edges_sql)
    cutoff = now_ns - 3600 * 10**9
    want = defaultdict(lambda: [0, 0, 0, 0])
    for e in expected["edges"]:
        if e["server"] == "payments" and e["bucket_start"] >= cutoff:
            w = want[e["client"]]
            for i, c in enumerate(("connections", "bytes_client_to_server", "bytes_server_to_client", "failed_connects")):
                w[i] += e[c]
    assert len(want) >= 3, "the sample has callers of payments in the last hour"
    ordered = sorted(((c, *v) for c, v in want.items()), key=lambda r: (-r[2], r[0]))
    assert [tuple(int(x) if i else x for i, x in enumerate(r)) for r in got] == ordered
    # Older rows exist and were left out.
    assert any(e["server"] == "payments" and e["bucket_start"] < cutoff for e in expected["edges"])

    now_ns, got = run_at_fixed_now(lake_dir, flows_sql)
    cutoff = now_ns - 3600 * 10**9
    latest = {}
    for f in expected["flows"]:
        if f["counted"] and f["start_ns"] >= cutoff:
            best = latest.get(f["flow_id"])
            if best is None or (f["open"], -f["end_ns"]) < (best["open"], -best["end_ns"]):
                latest[f["flow_id"]] = f
    want = defaultdict(lambda: [0, 0, 0])
    for f in latest.values():
        client = f["direction"] == "client"
        if (client and f["remote_workload"] == "payments") or (f["direction"] == "server" and f["local_workload"] == "payments"):
            caller = f["local_workload"] if client else f["remote_workload"]
            w = want[caller]
            w[0] += 1
            w[1] += f["bytes_sent"] if client else f["bytes_received"]
            w[2] += f["bytes_received"] if client else f["bytes_sent"]
    assert len(want) >= 3
    assert {r[0]: [int(x) for x in r[1:]] for r in got} == dict(want)
    assert len(got) == len(want)

    now_ns, got = run_at_fixed_now(lake_dir, reasons_sql)
    cutoff = now_ns - 3600 * 10**9
    want = defaultdict(int)
    for f in expected["flows"]:
        if f["remote_workload"] is None and f["start_ns"] >= cutoff:
            want[f["reason"]] += 1
    assert {r[0]: r[1] for r in got} == dict(want) and len(want) >= 2


def test_a_killed_writer_leaves_no_duplicates(sample_bin, tmp_path):
    """SIGKILL at three points while it writes, then a run to the end: DuckDB counts every row
    once, every file is whole Parquet, and no staging file is left."""
    lake_dir = tmp_path / "lake"
    args = [str(sample_bin), "--lake", str(lake_dir), "--base-ns", "1795950000000000000", "--messages", "4000",
            "--rows-per-message", "10", "--spread", "60", "--max-rows", "200", "--progress",
            "--expected", str(tmp_path / "rows.jsonl")]
    for kill_after in (30, 70, 110):
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        killed = False
        for line in p.stdout:
            if line.startswith("files ") and int(line.split()[1]) >= kill_after:
                p.send_signal(signal.SIGKILL)
                killed = True
                break
        p.wait()
        assert killed, f"the writer finished before {kill_after} files"
    committed = int((tmp_path / "lake.commit").read_text())
    assert 0 < committed < 4000
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["resumed_at"] == committed
    assert summary["flows"]["duplicates"] > 0, "the restart re-emitted rows already in the lake"

    con = duckdb.connect()
    flows = f"read_parquet('{lake_dir}/flows/*/*/*.parquet', hive_partitioning = true)"
    edges = f"read_parquet('{lake_dir}/edges/*/*/*.parquet', hive_partitioning = true)"
    total, distinct = con.execute(f"SELECT count(*), count(DISTINCT (flow_id, end_ns, open)) FROM {flows}").fetchone()
    assert total == distinct == 40000
    total, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT (bucket_start, client, server, server_port, protocol, emitted_at)) FROM {edges}"
    ).fetchone()
    assert total == distinct == 4000
    # The same rows as the input, value for value.
    expected = expected_rows(tmp_path / "rows.jsonl")
    got = {tuple(r[k] for k in FLOW_KEY): r for r in read_table(lake_dir, "flows")}
    for r in got.values():
        r.pop("dt"), r.pop("hour")
    assert got == {tuple(r[k] for k in FLOW_KEY): r for r in expected["flows"]}
    names = [str(p.relative_to(lake_dir)) for p in lake_dir.rglob("*") if p.is_file()]
    assert not [n for n in names if "#" in n], "a staging file is left"
    assert all(n.endswith(".parquet") or n.startswith("_lake/") for n in names)
