"""The VPC output schema (schema/proto/flowmap/v1/vpc.proto) from another language (Python).

Records written by flowmap (the `vpc_records` example: flow log file -> `VpcFlowRecord`s) are read
with classes that protoc (grpcio-tools) generates from the published .proto files, checked
against Python's own reading of the flow log text, and their record ids recomputed from the
documented algorithm; records written by Python are read back by flowmap's decoder.
"""
import gzip
import importlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FLOWMAP_VPC_RECORDS", ROOT / "target" / "debug" / "examples" / "vpc_records"))

DEFAULT = ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes "
           "start end action log-status")
# AWS's documented default-format examples (accepted, rejected, NODATA, SKIPDATA, IPv6).
DEFAULT_ROWS = [
    "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
    "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
    "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA",
    "2 123456789010 eni-1235b8ca123456789 2001:db8:1234:a100:8d6e:3477:df66:f105 "
    "2001:db8:1234:a102:3304:8879:34cf:4071 34892 22 6 54 8855 1477913708 1477913820 ACCEPT OK",
]
# A custom format in another order (NAT gateway interface: packet-level addresses differ).
CUSTOM = "flow-direction traffic-path instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr tcp-flags log-status"
CUSTOM_ROWS = [
    "egress 8 - eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5 2 OK",
    "ingress - - eni-1235b8ca123456789 10.0.0.220 10.0.1.5 203.0.113.5 10.0.1.5 18 OK",
]


def record_id(bucket, key, etag, line):
    """The documented algorithm (flowmap_schema::vpc::vpc_record_id), written independently."""
    data = b""
    for part in (bucket, key, etag):
        raw = part.encode()
        data += struct.pack("<Q", len(raw)) + raw
    data += struct.pack("<Q", line)
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 29)


def read_delimited(data):
    pos, out = 0, []
    while pos < len(data):
        shift = length = 0
        while True:
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(data[pos:pos + length])
        pos += length
    return out


def write_delimited(messages):
    out = b""
    for m in messages:
        n = len(m)
        while n >= 0x80:
            out += bytes([(n & 0x7F) | 0x80])
            n >>= 7
        out += bytes([n]) + m
    return out


@pytest.fixture(scope="module")
def vpc_pb2(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    from grpc_tools import protoc
    proto_root = ROOT / "schema" / "proto"
    files = [str(proto_root / "flowmap/v1" / f) for f in ("batch.proto", "attributed.proto", "vpc.proto")]
    rc = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", *files])
    assert rc == 0, "protoc failed on the published schema"
    sys.path.insert(0, str(out))
    return importlib.import_module("flowmap.v1.vpc_pb2")


@pytest.fixture(scope="module")
def records_bin():
    if "FLOWMAP_VPC_RECORDS" not in os.environ:
        # The whole workspace, as the Rust tests build it (scripts/test has, so this is a
        # no-op there; one package alone would rebuild dependencies with other features).
        subprocess.run(["cargo", "build", "-q", "--workspace", "--all-targets"], cwd=ROOT, check=True)
    assert BIN.exists(), f"{BIN} is missing"
    return BIN


def encode(records_bin, path, bucket, key, etag):
    out = subprocess.run([str(records_bin), "encode", str(path), "--bucket", bucket, "--key", key, "--etag", etag],
                         check=True, capture_output=True)
    return read_delimited(out.stdout)


def test_default_format_records_read_in_python(vpc_pb2, records_bin, tmp_path):
    path = tmp_path / "default.log.gz"
    path.write_bytes(gzip.compress(("\n".join([DEFAULT, *DEFAULT_ROWS]) + "\n").encode()))
    bucket, key, etag = "flowlogs", "AWSLogs/123456789010/vpcflowlogs/a b+c.log.gz", "9b2cf535f27731c974343645a3985328"
    msgs = [vpc_pb2.VpcFlowRecord.FromString(m) for m in encode(records_bin, path, bucket, key, etag)]
    assert len(msgs) == len(DEFAULT_ROWS)
    names = DEFAULT.split()
    for i, (m, row) in enumerate(zip(msgs, DEFAULT_ROWS)):
        line = i + 2
        values = dict(zip(names, row.split()))
        assert m.schema_version == 1
        assert (m.bucket, m.key, m.etag, m.line) == (bucket, key, etag, line)
        assert m.record_id == record_id(bucket, key, etag, line)
        assert m.account_id == values["account-id"] and m.interface_id == values["interface-id"]
        assert m.start_s == int(values["start"]) and m.end_s == int(values["end"])
        for field, name in (("srcport", "srcport"), ("dstport", "dstport"), ("protocol", "protocol"),
                            ("packets", "packets"), ("bytes", "bytes")):
            if values[name] == "-":
                assert not m.HasField(field), f"row {line}: '-' is absent, not 0"
            else:
                assert m.HasField(field) and getattr(m, field) == int(values[name])
        status = {"OK": vpc_pb2.VPC_LOG_STATUS_OK, "NODATA": vpc_pb2.VPC_LOG_STATUS_NODATA,
                  "SKIPDATA": vpc_pb2.VPC_LOG_STATUS_SKIPDATA}[values["log-status"]]
        assert m.log_status == status
        action = {"ACCEPT": vpc_pb2.VPC_ACTION_ACCEPT, "REJECT": vpc_pb2.VPC_ACTION_REJECT,
                  "-": vpc_pb2.VPC_ACTION_UNSPECIFIED}[values["action"]]
        assert m.action == action
        if values["srcaddr"] == "-":
            assert m.srcaddr == b"" and m.src.vpc_reason == vpc_pb2.VPC_REASON_NO_ADDRESS
        else:
            import ipaddress
            assert m.srcaddr == ipaddress.ip_address(values["srcaddr"]).packed
            assert m.src.ip == m.srcaddr and m.src.address_field == vpc_pb2.VPC_ADDRESS_FIELD_INTERFACE
        assert m.src.workload == "" and m.dst.workload == "", "ends come unattributed"
    assert len(msgs[4].srcaddr) == 16, "IPv6 addresses are 16 bytes"


def test_custom_format_and_packet_level_ends(vpc_pb2, records_bin, tmp_path):
    path = tmp_path / "custom.log"
    path.write_text("\n".join([CUSTOM, *CUSTOM_ROWS]) + "\n")
    msgs = [vpc_pb2.VpcFlowRecord.FromString(m) for m in encode(records_bin, path, "b", "k", "e")]
    out, back = msgs
    assert out.flow_direction == vpc_pb2.VPC_FLOW_DIRECTION_EGRESS and out.traffic_path == 8
    assert not back.HasField("traffic_path")
    assert (out.tcp_flags, back.tcp_flags) == (2, 18)
    assert not out.HasField("version") and not out.HasField("start_s")
    assert out.dst.ip == bytes([203, 0, 113, 5]) and out.dst.address_field == vpc_pb2.VPC_ADDRESS_FIELD_PACKET
    assert out.src.address_field == vpc_pb2.VPC_ADDRESS_FIELD_INTERFACE
    assert back.src.ip == bytes([203, 0, 113, 5]) and back.src.address_field == vpc_pb2.VPC_ADDRESS_FIELD_PACKET


def test_python_written_records_are_read_by_flowmap(vpc_pb2, records_bin, tmp_path):
    attributed = importlib.import_module("flowmap.v1.attributed_pb2")
    m = vpc_pb2.VpcFlowRecord(schema_version=1, bucket="b", key="k", etag="e", line=2, srcport=0, start_s=5,
                              srcaddr=bytes([10, 0, 0, 1]), dstaddr=bytes(16),
                              action=vpc_pb2.VPC_ACTION_REJECT, log_status=vpc_pb2.VPC_LOG_STATUS_OK)
    m.record_id = record_id("b", "k", "e", 2)
    m.src.ip = m.srcaddr
    m.src.address_field = vpc_pb2.VPC_ADDRESS_FIELD_INTERFACE
    m.src.workload = "checkout"
    m.src.evidence = attributed.EVIDENCE_HEARTBEAT
    m.dst.ip = m.dstaddr
    m.dst.vpc_reason = vpc_pb2.VPC_REASON_INTERVAL_NOT_COVERED
    other = vpc_pb2.VpcFlowRecord(schema_version=1, line=3)
    other.dst.reason = attributed.REASON_EXTERNAL
    data = write_delimited([m.SerializeToString(), other.SerializeToString()])
    out = subprocess.run([str(records_bin), "decode"], input=data, check=True, capture_output=True)
    first, second = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert first["record_id"] == record_id("b", "k", "e", 2)
    assert first["srcaddr"] == "10.0.0.1" and first["dstaddr"] == "::"
    assert first["srcport"] == 0 and first["dstport"] is None, "presence survives the round trip"
    assert first["src"]["workload"] == "checkout" and first["src"]["evidence"] == attributed.EVIDENCE_HEARTBEAT
    assert first["dst"]["vpc_reason"] == vpc_pb2.VPC_REASON_INTERVAL_NOT_COVERED
    assert second["dst"]["reason"] == attributed.REASON_EXTERNAL and second["src"] is None
    # A version flowmap does not know is refused.
    bad = write_delimited([vpc_pb2.VpcFlowRecord(schema_version=2).SerializeToString()])
    refused = subprocess.run([str(records_bin), "decode"], input=bad, capture_output=True)
    assert refused.returncode != 0 and b"unsupported schema version 2" in refused.stderr
