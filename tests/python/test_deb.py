"""The exporter's host package: built by scripts/package-exporter (cargo-deb), checked here
for its files, its maintainer scripts (nothing enabled or started on install), and the
capabilities its systemd unit grants (the binary really runs with only those)."""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deb():
    path = os.environ.get("FLOWMAP_DEB")
    if not path:
        out = subprocess.run([str(ROOT / "scripts" / "package-exporter")], check=True, capture_output=True, text=True)
        path = out.stdout.strip().splitlines()[-1]
    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    assert path.exists(), path
    return path


def dpkg_deb(*args):
    return subprocess.run(["dpkg-deb", *map(str, args)], check=True, capture_output=True, text=True).stdout


def test_contents(deb):
    listing = dpkg_deb("-c", deb)
    for f in ["./usr/bin/flowmap-exporter", "./lib/systemd/system/flowmap-exporter.service",
              "./etc/flowmap/exporter.toml", "./usr/share/doc/flowmap-exporter/DESIGN.md"]:
        assert f in listing, f
    assert dpkg_deb("-f", deb, "Package").strip() == "flowmap-exporter"
    assert "libc6" in dpkg_deb("-f", deb, "Depends")


def test_maintainer_scripts_start_nothing(deb, tmp_path):
    dpkg_deb("-e", deb, tmp_path / "control")
    conffiles = (tmp_path / "control" / "conffiles").read_text()
    assert "/etc/flowmap/exporter.toml" in conffiles
    postinst = (tmp_path / "control" / "postinst").read_text()
    commands = "\n".join(l for l in postinst.splitlines() if not l.lstrip().startswith("#"))
    assert "daemon-reload" in commands
    for word in ["enable", "start", "restart"]:
        assert f"systemctl {word}" not in commands


def test_unit_grants_only_bpf_and_perfmon_and_they_suffice(deb, tmp_path):
    dpkg_deb("-x", deb, tmp_path / "root")
    unit = (tmp_path / "root" / "lib/systemd/system/flowmap-exporter.service").read_text()
    assert "CapabilityBoundingSet=CAP_BPF CAP_PERFMON\n" in unit
    assert "AmbientCapabilities=CAP_BPF CAP_PERFMON\n" in unit
    assert "ExecStart=/usr/bin/flowmap-exporter --config /etc/flowmap/exporter.toml" in unit
    binary = tmp_path / "root" / "usr/bin/flowmap-exporter"
    assert subprocess.run([str(binary), "--version"], capture_output=True).returncode == 0
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop to those capabilities")
    # The packaged binary, as an unprivileged user holding only the unit's capabilities,
    # loads the probe and runs; with no capabilities it fails with a clear message.
    # A directory the unprivileged user can reach (pytest's own are private to root).
    sock_dir = Path(tempfile.mkdtemp(prefix="flowmap-deb-", dir="/tmp"))
    sock_dir.chmod(0o777)
    caps = "-all,+bpf,+perfmon"
    base = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    args = [str(binary), "--sink", "stdout", "--batch-interval", "200ms", "--metrics", "off",
            "--control-socket", str(sock_dir / "c.sock")]
    proc = subprocess.Popen(base + [f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopped after the last batch" in err
    # The unit's dynamic user cannot pin the open-connection map in /sys/fs/bpf: it says so, and
    # runs unpinned.
    assert "the open-connection map is not pinned" in err, err
    bare = subprocess.run(base + ["--inh-caps=-all", "--bounding-set=-all"] + args, capture_output=True, text=True, timeout=20)
    assert bare.returncode != 0
    assert "CAP_BPF" in bare.stderr, bare.stderr
