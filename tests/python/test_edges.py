"""Dependency edges, change events and the flow lake from one real run of `flowmap collect`
(the project's broker, a local lake directory), checked by independent readers: confluent-kafka
with protoc-generated classes for the topics, DuckDB over the lake's Parquet files, and the
Prometheus text format of `/metrics` while the job runs.

The equalities are the product's claims: a connection counts once (the lake's `counted` rows,
the edges' `connections` and the job's two-sided counts agree), the edges topic and the lake's
edges are the same deltas, and a new dependency is reported once per (client, server, port)
that connected.
"""
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pytest

from test_output_kafka import BIN, ROOT, SCENARIO, brokers, consume_all  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def edges_pb2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen-edges")
    from grpc_tools import protoc
    proto_root = ROOT / "schema" / "proto"
    files = [str(proto_root / f"flowmap/v1/{n}.proto") for n in ("batch", "attributed", "edges")]
    assert protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", *files]) == 0
    sys.path.insert(0, str(out))
    return importlib.import_module("flowmap.v1.edges_pb2")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def collected(brokers, tmp_path_factory):  # noqa: F811 (fixture)
    tmp = tmp_path_factory.mktemp("edges")
    scenario = tmp / "short.toml"
    scenario.write_text(SCENARIO.read_text().replace("duration_s = 10800", "duration_s = 180")
                        .replace("ipam_silences = 3", "ipam_silences = 0"))
    suffix = f"{os.getpid()}-{time.time_ns()}"
    topics = {k: f"py-{k}-{suffix}" for k in ("in", "out", "edges", "events")}
    subprocess.run([str(BIN), "simulate", "--scenario", str(scenario), "--brokers", brokers, "--topic",
                    topics["in"], "--truth", str(tmp / "truth.jsonl")], check=True, capture_output=True)
    lake = tmp / "lake"
    port = free_port()
    job = subprocess.Popen(
        [str(BIN), "collect", "--brokers", brokers, "--input-topic", topics["in"], "--output-topic", topics["out"],
         "--edges-topic", topics["edges"], "--change-events-topic", topics["events"], "--lake", str(lake),
         "--metrics", f"127.0.0.1:{port}", "--group", f"py-{suffix}", "--until-idle", "3s", "--json", "-w", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Scrape the metrics while the job runs (it stays up at least the idle period).
    scrapes, deadline = [], time.time() + 120
    while time.time() < deadline and job.poll() is None:
        try:
            scrapes.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
        except OSError:
            pass
        time.sleep(0.1)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    return {"topics": topics, "lake": lake, "summary": summary, "scrapes": scrapes, "stderr": err}


def lake_sql(lake, sql):
    con = duckdb.connect()
    con.sql(f"create view flows as select * from read_parquet('{lake}/flows/**/*.parquet', hive_partitioning=true)")
    con.sql(f"create view edges as select * from read_parquet('{lake}/edges/**/*.parquet', hive_partitioning=true)")
    return con.sql(sql).fetchall()


def test_lake_holds_every_output_record_once(collected):
    (rows, distinct), = lake_sql(collected["lake"], "select count(*), count(distinct (flow_id, end_ns, open)) from flows")
    assert rows == distinct == collected["summary"]["output"] > 1000


def edges_from_flows(lake):
    """Edges recomputed in SQL from the lake's flows table alone: per (client, server, port),
    the connections (the `counted` rows) and the bytes each way (each counted connection's
    last record from the counting end). External blocks are prefixes: left out on both sides."""
    return lake_sql(lake, """
        with counted as (select flow_id, exporter from flows where counted),
        last as (
          select f.* from flows f join counted using (flow_id, exporter)
          qualify row_number() over (partition by f.flow_id, f.exporter order by f.end_ns desc, f.open) = 1),
        ends as (
          select coalesce(local_workload, 'unattributed:no_local_workload') as l,
                 coalesce(remote_workload, 'unattributed:' || reason) as r,
                 case direction when 'client' then true when 'server' then false
                      else local_port >= remote_port end as c,
                 local_port, remote_port, bytes_sent, bytes_received
          from last where coalesce(reason, '') <> 'external')
        select case when c then l else r end, case when c then r else l end,
               case when c then remote_port else local_port end,
               count(*), sum(case when c then bytes_sent else bytes_received end),
               sum(case when c then bytes_received else bytes_sent end)
        from ends group by all""")


def edges_from_job(lake):
    return lake_sql(lake, """
        select client, server, server_port, sum(connections), sum(bytes_client_to_server),
               sum(bytes_server_to_client)
        from edges where client not like 'external:%' and server not like 'external:%'
        group by all having sum(connections) > 0""")


def test_each_connection_counts_once_in_edges(collected):
    lake = collected["lake"]
    (counted,), = lake_sql(lake, "select count(*) from flows where counted")
    (connections,), = lake_sql(lake, "select sum(connections) from edges")
    assert counted == connections > 500
    assert sorted(edges_from_flows(lake)) == sorted(edges_from_job(lake))


@pytest.mark.parametrize("scenario,workers", [("steady", 1), ("steady", 2), ("adversarial", 1), ("adversarial", 2)])
def test_demo_edges_equal_duckdb_over_the_flows(scenario, workers, tmp_path):
    lake = tmp_path / "lake"
    done = subprocess.run([str(BIN), "demo", "--scenario", scenario, "-w", str(workers), "--lake", str(lake), "--json"],
                          check=True, capture_output=True, text=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["misattributed"] == 0
    (rows,), = lake_sql(lake, "select count(*) from flows")
    assert rows == summary["records"]
    job, independent = sorted(edges_from_job(lake)), sorted(edges_from_flows(lake))
    assert len(job) > 1000
    assert job == independent


def test_edges_topic_equals_the_lake(collected, edges_pb2):
    edges = []
    for m in consume_all(collected_brokers(), collected["topics"]["edges"]):
        e = edges_pb2.Edge()
        e.ParseFromString(m.value())
        assert e.schema_version == 1 and e.protocol == "tcp" and e.bucket_s > 0
        assert e.bucket_start_ns % (e.bucket_s * 1_000_000_000) == 0
        edges.append((e.bucket_start_ns, e.client, e.server, e.server_port, e.emitted_at_ns, e.connections,
                      e.bytes_client_to_server, e.bytes_server_to_client, e.verified, e.one_sided))
    lake = lake_sql(collected["lake"], """
        select epoch_ns(bucket_start), client, server, server_port, epoch_ns(emitted_at), connections,
               bytes_client_to_server, bytes_server_to_client, verified, one_sided from edges""")
    assert len(edges) == collected["summary"]["counts"]["edges"] > 100
    assert sorted(edges) == sorted(lake)


def test_new_dependencies_are_reported_once_per_edge(collected, edges_pb2):
    kinds = Counter()
    new = set()
    for m in consume_all(collected_brokers(), collected["topics"]["events"]):
        ev = edges_pb2.Event()
        ev.ParseFromString(m.value())
        kinds[edges_pb2.EventKind.Name(ev.kind)] += 1
        if ev.kind == edges_pb2.EVENT_KIND_NEW_DEPENDENCY:
            key = (ev.client, ev.server, ev.server_port)
            assert key not in new, f"{key} reported twice"
            new.add(key)
    known = {tuple(r) for r in lake_sql(collected["lake"], """
        select client, server, server_port from edges
        where client not like 'unattributed:%' and server not like 'unattributed:%'
        group by all having sum(connections) + sum(failed_connects) > 0""")}
    assert new == known and len(new) > 50, kinds


def metric_sums(text):
    """Each metric summed over its labels (the workers)."""
    values = defaultdict(float)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            values[line.split("{")[0].split(" ")[0]] += float(line.rsplit(" ", 1)[1])
    return values


def test_metrics_move_while_running_and_match_the_summary(collected):
    series = [metric_sums(t) for t in collected["scrapes"]]
    assert len(series) >= 5, "the endpoint answered while the job ran"
    for name in ("flowmap_flows_output_total", "flowmap_batches_total", "flowmap_ownership_state_bytes",
                 "flowmap_connections_checked_total", "flowmap_edge_rows_total"):
        assert name in series[-1], f"{name} missing from /metrics"
    summary = collected["summary"]
    for name, total in (("flowmap_flows_output_total", summary["output"]),
                        ("flowmap_flows_attributed_total", summary["attributed"]),
                        ("flowmap_batches_total", summary["ingest"]["batches"])):
        values = [s[name] for s in series]
        assert values == sorted(values), f"{name} went down: {values}"
        assert 0 < values[-1] <= total, f"{name}: scraped {values[-1]}, summary {total}"


def test_consumer_lag_per_partition_is_served_and_ends_at_zero(collected, brokers):  # noqa: F811
    """`flowmap_consumer_lag_messages{topic,partition}`: one series per input partition, from
    librdkafka's statistics; the job read everything before it went idle, so each ends at 0."""
    topic = collected["topics"]["in"]
    last = {}
    for text in collected["scrapes"]:
        for line in text.splitlines():
            if line.startswith("flowmap_consumer_lag_messages{") and f'topic="{topic}"' in line:
                partition = line.split('partition="')[1].split('"')[0]
                last[partition] = float(line.rsplit(" ", 1)[1])
    from confluent_kafka.admin import AdminClient
    meta = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=10)
    assert sorted(last) == sorted(str(p) for p in meta.topics[topic].partitions), last
    assert all(v == 0 for v in last.values()), last


def collected_brokers():
    return os.environ.get("FLOWMAP_TEST_BROKERS") or subprocess.run(
        [str(ROOT / "scripts" / "broker"), "start"], check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]


def test_lake_survives_a_killed_job(brokers, tmp_path, pb2_attributed):  # noqa: F811 (fixture)
    """`collect --lake` killed (SIGKILL) mid-stream and started again on the same group and
    lake: the lake holds every distinct output record exactly once (DuckDB), although the
    restarted job re-emits what the killed one had not committed."""
    scenario = tmp_path / "short.toml"
    scenario.write_text(SCENARIO.read_text().replace("duration_s = 10800", "duration_s = 300")
                        .replace("ipam_silences = 3", "ipam_silences = 0"))
    suffix = f"{os.getpid()}-{time.time_ns()}"
    topic, output, group, lake = f"py-kin-{suffix}", f"py-kout-{suffix}", f"py-k-{suffix}", tmp_path / "lake"
    publisher = subprocess.Popen([str(BIN), "simulate", "--scenario", str(scenario), "--brokers", brokers, "--topic",
                                  topic, "--truth", str(tmp_path / "truth.jsonl"), "--rate", "60"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)
    collect = [str(BIN), "collect", "--brokers", brokers, "--input-topic", topic, "--output-topic", output,
               "--group", group, "--lake", str(lake), "--json", "-w", "2"]
    first = subprocess.Popen(collect, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(lake.glob("flows/**/*.parquet")):
        assert time.time() < deadline and first.poll() is None, "no lake file before the kill"
        time.sleep(0.1)
    first.kill()
    first.wait()
    assert publisher.wait(timeout=120) == 0
    done = subprocess.run(collect + ["--until-idle", "3s"], check=True, capture_output=True, text=True, timeout=300)
    assert json.loads(done.stdout.strip().splitlines()[-1])["output"] > 0
    keys = set()
    for m in consume_all(brokers, output):
        rec = pb2_attributed.AttributedFlow()
        rec.ParseFromString(m.value())
        keys.add((rec.flow_id, rec.end_ns, rec.open))
    (rows, distinct), = lake_sql(lake, "select count(*), count(distinct (flow_id, end_ns, open)) from flows")
    assert rows == distinct == len(keys) > 1000
    lake_keys = {tuple(r) for r in lake_sql(lake, "select flow_id, epoch_ns(end_ns), open from flows")}
    assert lake_keys == keys


@pytest.fixture(scope="module")
def pb2_attributed(edges_pb2):
    return importlib.import_module("flowmap.v1.attributed_pb2")
