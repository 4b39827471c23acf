"""The job's Kafka output, read by an independent client: Python's confluent-kafka consumer
and Protobuf classes that protoc generates from the published
`schema/proto/flowmap/v1/attributed.proto`. The broker is the project's own (scripts/broker).
"""
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FLOWMAP_BIN", ROOT / "target" / "debug" / "flowmap"))
SCENARIO = ROOT / "configs" / "scenarios" / "long.toml"


def flowmap(*args):
    assert BIN.exists(), f"{BIN} is missing: build it first (scripts/test does)"
    return subprocess.run([str(BIN), *map(str, args)], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def brokers():
    if os.environ.get("FLOWMAP_TEST_BROKERS"):
        return os.environ["FLOWMAP_TEST_BROKERS"]
    out = subprocess.run([str(ROOT / "scripts" / "broker"), "start"], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pb2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    from grpc_tools import protoc
    proto_root = ROOT / "schema" / "proto"
    files = [str(proto_root / "flowmap/v1/batch.proto"), str(proto_root / "flowmap/v1/attributed.proto")]
    assert protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", *files]) == 0
    sys.path.insert(0, str(out))
    return importlib.import_module("flowmap.v1.attributed_pb2")


@pytest.fixture(scope="module")
def run(brokers, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kafka")
    scenario = tmp / "short.toml"
    scenario.write_text(SCENARIO.read_text().replace("duration_s = 10800", "duration_s = 180").replace("ipam_silences = 3", "ipam_silences = 0"))
    suffix = f"{os.getpid()}-{time.time_ns()}"
    topic, output = f"py-flows-{suffix}", f"py-attributed-{suffix}"
    flowmap("simulate", "--scenario", scenario, "--brokers", brokers, "--topic", topic, "--truth", tmp / "truth.jsonl")
    done = flowmap("collect", "--brokers", brokers, "--input-topic", topic, "--output-topic", output,
                   "--group", f"py-{suffix}", "--until-idle", "2s", "--json")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    flowmap("replay", "--brokers", brokers, "--topic", topic, "--out", tmp / "replay.jsonl", "-w", "1")
    replayed = [json.loads(line) for line in (tmp / "replay.jsonl").read_text().splitlines()]
    return {"output": output, "summary": summary, "replayed": replayed}


def consume_all(brokers, topic):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"py-reader-{time.time_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages, at_end, deadline = [], set(), time.time() + 60
    while len(at_end) < len(partitions):
        assert time.time() < deadline, "reading the output topic stalled"
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            at_end.add(m.partition())
            continue
        messages.append(m)
    consumer.close()
    return messages


def test_output_topic_is_readable_by_an_independent_client(brokers, run, pb2):
    messages = consume_all(brokers, run["output"])
    assert len(messages) == run["summary"]["output"] > 1000
    # Names from the schema itself, so a new evidence kind or reason is covered as it lands.
    evidence_names = {v: n.removeprefix("EVIDENCE_").lower() for n, v in pb2.Evidence.items() if v}
    reason_names = {v: n.removeprefix("REASON_").lower() for n, v in pb2.Reason.items() if v}
    ours = {}
    for m in messages:
        rec = pb2.AttributedFlow()
        rec.ParseFromString(m.value())
        assert rec.schema_version == 1
        assert m.key() == rec.flow_id.to_bytes(8, "big"), "keyed by flow id"
        assert len(rec.local_ip) in (4, 16) and len(rec.remote_ip) in (4, 16)
        assert rec.end_ns >= rec.start_ns > 0
        assert m.timestamp()[1] == rec.start_ns // 1_000_000
        if rec.remote_workload:
            assert rec.reason == 0 and rec.evidence in evidence_names
            ours[rec.flow_id] = (rec.remote_workload, None)
        else:
            assert rec.evidence == 0 and rec.reason in reason_names
            ours[rec.flow_id] = (None, reason_names[rec.reason])
    # The same verdicts as the JSON records of a replay of the same input.
    theirs = {r["flow_id"]: (r["remote_workload"], r["reason"]) for r in run["replayed"]}
    assert ours == theirs
