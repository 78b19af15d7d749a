"""Fixes from a runtime audit, each with real containers: a controller killed while a container
starts, published ports with --network host, Docker's "0 = no limit", and diff on a copied root.
"""
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import requires_isolation

pytestmark = requires_isolation("full")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                          text=True, timeout=120)


# ------------------------------------------------------------ 1. killed while starting

# The controller: a Python process that starts a container and is SIGKILLed right after the
# process chain exists, before start() returns (the moment a notebook's Ctrl-C or kill -9 can
# hit). With `cgroups` False it runs as on a host where no cgroup of ours can hold the
# container's processes, so nothing but the recorded pids lets `prune` find them.
DIES_WHILE_STARTING = """
import os, signal
from ctrkernel.runtime import container, spawn
container.NATIVE_CHAIN = {native}
if not {cgroups}:
    container._cgroups = lambda: None
real = spawn.launch_native if {native} else spawn.launch

def launch_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(spawn, real.__name__, launch_then_die)
c = container.create("busybox", ["sh", "-c", "sleep 600; : {token}"])
print(c.id, flush=True)
c.start()
"""


def _processes_mentioning(*words):
    found = []
    for p in psutil.process_iter():
        try:
            cmdline = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if p.pid != os.getpid() and any(w in cmdline for w in words):
            found.append((p.pid, cmdline))
    return found


def _cgroup_dirs(container_id):
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/ctrkernel/{container_id}")]


@pytest.mark.parametrize("native", [True, False], ids=["c-chain", "python-chain"])
@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "no-cgroup"])
def test_prune_cleans_a_container_whose_controller_died_while_starting(native, cgroups):
    token = "ctrk-" + secrets.token_hex(6)
    code = DIES_WHILE_STARTING.format(native=native, cgroups=cgroups, token=token)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    container_id = done.stdout.strip()
    assert len(container_id) == 64, done.stdout + done.stderr
    try:
        _check_prune_cleans(container_id, token)
    finally:  # if it did not, do not leave our own processes to the rest of the session
        for pid, _ in _processes_mentioning(token, container_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _check_prune_cleans(container_id, token):
    from ctrkernel.runtime import state
    # The container's command really is running now, with nobody left to look after it.
    deadline = time.monotonic() + 10
    while not _processes_mentioning(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(token), "the container never started"
    assert _processes_mentioning(container_id), "its shim is not running"

    pruned = cli("prune", "-f")
    assert pruned.returncode == 0, pruned.stderr
    assert container_id in pruned.stdout

    deadline = time.monotonic() + 10
    left = _processes_mentioning(token, container_id)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _processes_mentioning(token, container_id)
    assert not left, f"processes left behind: {left}"
    assert not _cgroup_dirs(container_id)
    with open("/proc/mounts") as f:
        assert container_id not in f.read()
    assert not state.container_dir(container_id).exists()
    assert container_id not in cli("ps", "-a", "-q", "--no-trunc").stdout


# ------------------------------------------------------------ 3. -p with --network host

def test_published_ports_with_host_network_are_discarded_with_dockers_warning():
    from ctrkernel.runtime import create
    c = create("busybox", ["true"], network="host", ports={"80/tcp": 8080})
    try:
        assert c.attrs["Ports"] == []
        assert "Published ports are discarded when using host network mode" in \
            c.isolation["notes"]
    finally:
        c.remove()
    # Not with the default network, where the port is published.
    c = create("busybox", ["true"], ports={"80/tcp": 8080})
    try:
        assert c.attrs["Ports"] == [[80, 8080]]
        assert not any("discarded" in n for n in c.isolation["notes"])
    finally:
        c.remove()


def test_cli_warns_that_host_network_discards_published_ports():
    done = cli("run", "--rm", "-p", "8080:80", "--network", "host", "busybox", "true")
    assert done.returncode == 0, done.stderr
    assert "WARNING: Published ports are discarded when using host network mode" in done.stderr


# ------------------------------------------------------------ 4. 0 means "no limit"

@pytest.mark.parametrize("flags", [["-m", "0"], ["--memory", "0"], ["--memory", "0m"],
                                   ["--memory-swap", "0"], ["--cpus", "0"],
                                   ["--pids-limit", "0"], ["-m", "0", "--memory-swap", "0",
                                                           "--cpus", "0", "--pids-limit", "0"]])
def test_cli_zero_limits_mean_no_limit_as_in_docker(flags):
    """The container runs, and its cgroup (read on the host) has no limit: Docker's 0."""
    done = cli("run", "-d", *flags, "busybox", "sleep", "60")
    assert done.returncode == 0, done.stderr
    container_id = done.stdout.strip()
    try:
        def read(controller, name):
            return Path(f"/sys/fs/cgroup/{controller}/ctrkernel/{container_id}/{name}") \
                .read_text().strip()
        assert int(read("memory", "memory.limit_in_bytes")) >= 1 << 60
        assert read("pids", "pids.max") == "max"
        assert read("cpu", "cpu.cfs_quota_us") == "-1"
    finally:
        assert cli("rm", "-f", container_id).returncode == 0


def test_cli_still_refuses_a_memory_limit_too_small_to_start_in():
    done = cli("run", "--rm", "-m", "1k", "busybox", "true")
    assert done.returncode == 125
    assert "too small" in done.stderr
    assert cli("ps", "-a", "-q").stdout == ""


def test_resources_read_zero_as_unset_like_docker():
    from ctrkernel.errors import InvalidArgument
    from ctrkernel.runtime.cgroups import Resources
    r = Resources.from_docker(mem_limit="0", memswap_limit="0", cpus="0", pids_limit="0")
    assert (r.memory, r.memory_swap, r.nano_cpus, r.effective_pids_limit) == (None,) * 4
    assert r.describe() == "no limits"
    assert Resources.from_docker(mem_limit="64m", memswap_limit="0").effective_memory_swap \
        == 64 << 20  # 0 is "not set": ctrkernel's default, no swap
    for bad in ({"mem_limit": "1k"}, {"mem_limit": "-1"}, {"cpus": "-0.5"},
                {"pids_limit": "-2"}, {"mem_limit": "0", "memswap_limit": "64m"}):
        with pytest.raises(InvalidArgument):
            Resources.from_docker(**bad)


# ------------------------------------------------------------ 5. diff on a copied root

class TwoLayers:
    """busybox with a second layer on top, made here: a whiteout (a file the image deletes),
    an opaque directory (lower contents hidden), a file over a directory and a new file, so
    that the copy and overlayfs both apply the union rules the diff must follow."""
    id, ref = "sha256:audit-two-layers", "audit-two-layers"
    config = {"config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/sbin:/usr/bin"]}}

    def __init__(self, base, top):
        self.base, self.top = base, top

    def layer_dirs(self):
        return [*self.base.layer_dirs(), self.top]


@pytest.fixture
def two_layers(tmp_path):
    from ctrkernel.image import get_image
    top = tmp_path / "top"
    (top / "bin").mkdir(parents=True)
    os.mknod(top / "bin/vi", 0o600 | 0o020000, 0)   # overlayfs's whiteout: a 0/0 char device
    (top / "etc").mkdir()
    os.setxattr(top / "etc", "trusted.overlay.opaque", b"y")
    (top / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (top / "home").write_text("a file where the image had a directory\n")
    (top / "tmp").mkdir()
    os.chmod(top / "tmp", 0o1777)
    (top / "tmp/from-layer").write_text("layer\n")
    return TwoLayers(get_image("busybox"), str(top))


CHANGES = ("echo hi > /tmp/new; echo x >> /etc/passwd; rm /bin/sed /tmp/from-layer;"
           " mkdir -p /a/b; chmod 750 /root; rm -r /var; ln -s /nowhere /link; touch /bin/busybox")


def _diff_after(image, kind, monkeypatch):
    import ctrkernel.runtime.container as container
    from ctrkernel.runtime import create
    monkeypatch.setattr(container.rootfs, "choose_kind", lambda report, rootless: kind)
    c = create(image, ["sh", "-c", CHANGES])
    try:
        c.start()
        assert c.wait()["StatusCode"] == 0, c.logs()
        assert c.isolation["rootfs"] == kind
        return {d["Path"]: "CAD"[d["Kind"]] for d in c.diff()}
    finally:
        c.remove(force=True)


def test_diff_of_a_copied_root_matches_the_overlay_diff(two_layers, monkeypatch):
    copy = _diff_after(two_layers, "copy", monkeypatch)
    overlay = _diff_after(two_layers, "overlayfs", monkeypatch)
    assert copy == overlay
    expected = {"/tmp": "C", "/tmp/new": "A", "/tmp/from-layer": "D", "/etc": "C",
                "/etc/passwd": "C", "/bin": "C", "/bin/sed": "D", "/bin/busybox": "C", "/a": "A",
                "/a/b": "A", "/root": "C", "/var": "D", "/link": "A"}
    assert copy == expected
    # The layers below were not touched: what the image deletes stays deleted only above.
    assert os.path.lexists(Path(two_layers.base.layer_dirs()[-1]) / "bin/vi")


def test_cli_diff_of_a_copied_root(two_layers, monkeypatch):
    import ctrkernel.runtime.container as container
    from ctrkernel.cli import main
    from ctrkernel.runtime import create
    monkeypatch.setattr(container.rootfs, "choose_kind", lambda report, rootless: "copy")
    c = create("busybox", ["sh", "-c", "echo hi > /tmp/x; rm /bin/vi"])
    try:
        c.start()
        assert c.wait()["StatusCode"] == 0
        import contextlib
        import io
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["diff", c.id]) == 0
        assert out.getvalue().splitlines() == ["C /bin", "D /bin/vi", "C /tmp", "A /tmp/x"]
    finally:
        c.remove(force=True)


def test_diff_on_a_binder_like_host_under_proot(unprivileged_home):
    """No namespaces, no overlay: the root is a copy proot runs in, and diff still answers."""
    import shutil
    from conftest import binder_sim
    if not shutil.which("proot"):
        pytest.skip("proot is not installed")
    ctr = f"{sys.executable} -m ctrkernel"
    script = (f"{ctr} run --name d busybox sh -c 'echo hi > /tmp/x; rm /bin/vi' && "
              f"{ctr} diff d; {ctr} rm -f d")
    done = binder_sim(["sh", "-c", script], env={"CTRKERNEL_HOME": str(unprivileged_home)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:4] == ["C /bin", "D /bin/vi", "C /tmp", "A /tmp/x"]
    assert done.stdout.splitlines()[4:] == ["d"]


def test_kill_all_never_signals_a_pid_that_left_the_group():
    """The race a pid-based kill has: a pid read from the group exits and is reused by a process
    elsewhere before the SIGKILL. Modelled with a real process outside any container, which
    the group listed on the first read and no longer lists on the re-check after pinning."""
    from ctrkernel.runtime.cgroups.base import kill_all
    outsider = subprocess.Popen(["sleep", "30"])
    reads = iter([[outsider.pid], [], []])
    try:
        assert kill_all(lambda: next(reads), timeout=1)
        time.sleep(0.1)
        assert outsider.poll() is None          # never signalled
    finally:
        outsider.kill()
        outsider.wait()
