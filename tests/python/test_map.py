"""The map's API (`flowmap serve --lake`) over the lake a demo wrote, against DuckDB reading the
same Parquet files: the graph of the whole range, at full name depth, has exactly the edges and
the sums DuckDB computes; a bad parameter is a 400 with a message.
"""
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import duckdb
import pytest

from test_output_kafka import BIN


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    lake = tmp_path_factory.mktemp("map") / "lake"
    subprocess.run([str(BIN), "demo", "--scenario", "steady", "--lake", str(lake), "--json"],
                   check=True, capture_output=True, text=True)
    server = subprocess.Popen([str(BIN), "serve", "--lake", str(lake), "--addr", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        assert " is at http://" in line, line
        yield lake, line.strip().rsplit(" ", 1)[1]
    finally:
        server.kill()
        server.wait()


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def test_graph_equals_duckdb_over_the_lake(served):
    lake, base = served
    meta = get(f"{base}/api/meta")
    frm, to = meta["extent"]["from"], meta["extent"]["to"]
    query = urllib.parse.urlencode({"from": frm, "to": to, "group": meta["max_level"], "limit": meta["max_limit"]})
    graph = get(f"{base}/api/graph?{query}")
    assert not graph["truncated"]
    known = lambda n: not (n.startswith("external") or n.startswith("unattributed"))  # noqa: E731
    api = {(e["source"], e["target"]): (e["connections"], e["bytes_client_to_server"], e["bytes_server_to_client"],
                                        e["verified"], e["one_sided"])
           for e in graph["edges"] if known(e["source"]) and known(e["target"])}
    rows = duckdb.connect().sql(f"""
        select client, server, sum(connections), sum(bytes_client_to_server), sum(bytes_server_to_client),
               sum(verified), sum(one_sided)
        from read_parquet('{lake}/edges/**/*.parquet', hive_partitioning=true)
        where bucket_start >= '{frm}'::timestamptz and bucket_start < '{to}'::timestamptz
          and client not like 'external%' and client not like 'unattributed%'
          and server not like 'external%' and server not like 'unattributed%'
        group by all""").fetchall()
    independent = {(r[0], r[1]): tuple(int(v) for v in r[2:]) for r in rows}
    assert len(api) > 1000
    assert api == independent


@pytest.mark.parametrize("query,names", [("from=yesterday", "from"), ("group=-1", "group"),
                                         ("limit=0", "limit"), ("port=99999", "port"), ("nonsense=1", "nonsense")])
def test_bad_parameters_are_a_400_naming_them(served, query, names):
    _, base = served
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/api/graph?{query}", timeout=30)
    assert e.value.code == 400
    assert names in json.loads(e.value.read())["error"]
