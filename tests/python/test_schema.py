"""The wire schema and the output records, read from another language (Python).

The batches come from `flowmap simulate`; the Protobuf classes are generated from the published
`schema/proto/flowmap/v1/batch.proto` with protoc (grpcio-tools), not written by hand.
"""
import importlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FLOWMAP_BIN", ROOT / "target" / "debug" / "flowmap"))
SCENARIO = ROOT / "configs" / "scenarios" / "long.toml"


def enum_names(enum, prefix):
    """The JSON names of a published enum's values (`REASON_NO_OWNER` -> `no_owner`), read
    from the schema itself so that a value added later is covered as it lands."""
    text = (ROOT / "schema" / "proto" / "flowmap" / "v1" / "attributed.proto").read_text()
    body = text.split(f"enum {enum} {{", 1)[1].split("}", 1)[0]
    names = [line.split("=")[0].strip() for line in body.splitlines() if "=" in line and not line.strip().startswith("//")]
    return {n.removeprefix(prefix).lower() for n in names if not n.endswith("_UNSPECIFIED")}


EVIDENCE = enum_names("Evidence", "EVIDENCE_")
REASONS = enum_names("Reason", "REASON_")


def flowmap(*args):
    assert BIN.exists(), f"{BIN} is missing: build it first (scripts/test does)"
    return subprocess.run([str(BIN), *map(str, args)], check=True, capture_output=True, text=True)


def read_deliveries(path):
    data = path.read_bytes()
    assert data[:4] == b"FMD1"
    pos, out = 4, []
    while pos < len(data):
        (klen,) = struct.unpack_from("<I", data, pos); pos += 4
        key = data[pos:pos + klen].decode(); pos += klen
        (arrival,) = struct.unpack_from("<Q", data, pos); pos += 8
        (plen,) = struct.unpack_from("<I", data, pos); pos += 4
        out.append((key, arrival, data[pos:pos + plen])); pos += plen
    return out


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    scenario = tmp / "short.toml"
    scenario.write_text(SCENARIO.read_text().replace("duration_s = 10800", "duration_s = 120").replace("ipam_silences = 3", "ipam_silences = 0"))
    flowmap("simulate", "--scenario", scenario, "--out", tmp / "sim")
    return tmp


@pytest.fixture(scope="module")
def batch_pb2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    from grpc_tools import protoc
    proto_root = ROOT / "schema" / "proto"
    rc = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", str(proto_root / "flowmap/v1/batch.proto")])
    assert rc == 0, "protoc failed on the published schema"
    sys.path.insert(0, str(out))
    return importlib.import_module("flowmap.v1.batch_pb2")


def test_batches_decode_with_generated_code(simulated, batch_pb2):
    deliveries = read_deliveries(simulated / "sim" / "deliveries.fmd")
    flows = heartbeats = assignments = 0
    for key, _arrival, payload in deliveries:
        batch = batch_pb2.ExporterBatch.FromString(payload)
        assert batch.schema_version == 1
        assert batch.exporter_id == key
        assert batch.window_from_ns < batch.window_to_ns
        for f in batch.flows:
            assert len(f.local_ip) in (4, 16) and len(f.remote_ip) in (4, 16)
            # The batch's promise: a closed flow ended inside the window; the slice of a flow
            # still open ends at the window's end.
            if f.open:
                assert f.start_ns <= f.end_ns == batch.window_to_ns, "an open slice"
            else:
                assert f.start_ns <= f.end_ns < batch.window_to_ns, "the batch's promise"
            # Which side opened is known unless the exporter did not see the connection
            # established (one older than the exporter: `start_unobserved`).
            if f.start_unobserved:
                assert f.direction in (batch_pb2.DIRECTION_UNSPECIFIED, batch_pb2.DIRECTION_CLIENT,
                                       batch_pb2.DIRECTION_SERVER)
            else:
                assert f.direction in (batch_pb2.DIRECTION_CLIENT, batch_pb2.DIRECTION_SERVER)
        flows += len(batch.flows)
        heartbeats += len(batch.heartbeats)
        assignments += len(batch.assignments)
    assert flows > 100 and heartbeats > 10 and assignments > 10


def test_python_written_batch_is_read_by_flowmap(simulated, batch_pb2, tmp_path):
    """A batch written by Python round-trips through flowmap's reader: the contract is shared."""
    deliveries = read_deliveries(simulated / "sim" / "deliveries.fmd")
    # Re-encode every batch with the Python library and write a new delivery log.
    log = bytearray(b"FMD1")
    for key, arrival, payload in deliveries:
        batch = batch_pb2.ExporterBatch.FromString(payload)
        data = batch.SerializeToString()
        k = key.encode()
        log += struct.pack("<I", len(k)) + k + struct.pack("<Q", arrival) + struct.pack("<I", len(data)) + data
    sim = tmp_path / "py"
    sim.mkdir()
    (sim / "deliveries.fmd").write_bytes(bytes(log))
    (sim / "roster.txt").write_text((simulated / "sim" / "roster.txt").read_text())
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    flowmap("attribute", "--input", simulated / "sim", "--out", ours, "-w", "1")
    flowmap("attribute", "--input", sim, "--out", theirs, "-w", "1")
    assert ours.read_bytes() == theirs.read_bytes()


def test_output_records_are_plain_json(simulated, tmp_path):
    out = tmp_path / "out.jsonl"
    flowmap("attribute", "--input", simulated / "sim", "--out", out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records
    for r in records:
        assert isinstance(r["flow_id"], int) and isinstance(r["bytes_sent"], int)
        assert (r["remote_workload"] is None) == (r["reason"] is not None)
        if r["remote_workload"] is not None:
            assert r["evidence"] in EVIDENCE
        else:
            assert r["reason"] in REASONS
