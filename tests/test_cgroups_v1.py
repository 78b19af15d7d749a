"""Real cgroup limits on containers, on this host's v1 hierarchy (skipped where not writable)."""
import os
import time

import pytest

from conftest import host
from ctrkernel.errors import Conflict, InvalidArgument
from ctrkernel.runtime import run
from ctrkernel.runtime.cgroups import Resources, cgroup_manager

pytestmark = pytest.mark.skipif(host().cgroup["driver"] != "v1", reason="needs writable cgroup v1")


def test_memory_hog_is_oom_killed_and_reported():
    limits = Resources.from_docker(mem_limit="16m")
    # A shell variable that doubles until it needs far more than 16 MiB.
    hog = "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"
    c = run("busybox", ["sh", "-c", hog], detach=True, resources=limits)
    try:
        result = c.wait()
    finally:
        c.remove(force=True)
    assert result["StatusCode"] == 137 and result["OOMKilled"] is True


def test_fork_bomb_is_stopped_by_the_process_limit_and_the_host_is_fine():
    limits = Resources.from_docker(pids_limit=20)
    bomb = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait"
    c = run("busybox", ["sh", "-c", bomb], detach=True, resources=limits)
    try:
        for _ in range(100):  # until the shell has hit the limit (bounded)
            if b"fork" in c.logs(stdout=False, stderr=True):
                break
            time.sleep(0.05)
        assert b"fork" in c.logs(stdout=False, stderr=True)  # "can't fork": refused
        # the kernel refused the 21st process: busybox sh reports it and gives up
        assert c.cgroup.stats().pids_limit == 20
    finally:
        c.remove(force=True)
    assert os.system("true") == 0  # the host can still start processes


def test_half_a_cpu_holds_a_busy_loop_near_fifty_percent():
    c = run("busybox", ["sh", "-c", "while :; do :; done"], detach=True,
            resources=Resources.from_docker(cpus="0.5"))
    try:
        cg = c.cgroup
        first, t0 = cg.stats().cpu_usage_ns, time.monotonic()
        time.sleep(3)
        used = (cg.stats().cpu_usage_ns - first) / 1e9 / (time.monotonic() - t0)
    finally:
        c.remove(force=True)
    assert 0.3 < used < 0.6, f"{used:.2f} CPU"


# written then renamed: a reader never sees the file empty between truncation and write
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.05; done"


def _count(c):
    return int(open(f"{c.upper_dir}/tmp/n").read() or 0)


def test_pause_stops_a_counting_container_and_unpause_resumes_it():
    c = run("busybox", ["sh", "-c", COUNTER], detach=True)
    try:
        time.sleep(0.5)
        c.pause()
        assert c.status == "paused" and c.cgroup.frozen()
        frozen_at = _count(c)
        time.sleep(0.6)
        assert _count(c) == frozen_at            # not one step while frozen
        with pytest.raises(Conflict, match="paused"):
            c.exec_run(["true"])
        c.unpause()
        time.sleep(0.6)
        assert c.status == "running" and _count(c) > frozen_at
    finally:
        c.remove(force=True)


def test_a_paused_container_can_still_be_stopped():
    c = run("busybox", ["sh", "-c", COUNTER], detach=True)
    c.pause()
    c.stop(timeout=1)          # sh ignores SIGTERM as PID 1: SIGKILL after the timeout
    try:
        assert c.wait(timeout=5)["StatusCode"] == 137
    finally:
        c.remove(force=True)


def test_update_changes_the_limits_of_a_running_container():
    c = run("busybox", ["sleep", "60"], detach=True,
            resources=Resources.from_docker(mem_limit="32m", pids_limit=10))
    try:
        c.update(mem_limit="96m")
        assert c.cgroup.stats().memory_limit == 96 << 20
        assert c.cgroup.stats().pids_limit == 10     # what was not given stays
        assert c.attrs["Resources"]["memory"] == 96 << 20
        with pytest.raises(InvalidArgument):
            c.update(mem_limit="12zb")
        assert c.cgroup.stats().memory_limit == 96 << 20
    finally:
        c.remove(force=True)


def test_cgroup_is_removed_with_the_container():
    c = run("busybox", ["true"], detach=True, resources=Resources.from_docker(mem_limit="32m"))
    c.wait()
    c.remove()
    assert c.id not in cgroup_manager().list_ids()


@pytest.mark.parametrize("bad", [dict(mem_limit="12zb"), dict(mem_limit="1m"),
                                 dict(mem_limit="-5m"), dict(pids_limit=-3),
                                 dict(cpus="999"), dict(pids_limit="99999999999999999999"),
                                 dict(cpu_quota="99999999999999999999"),
                                 dict(mem_limit="99999999999999999999")])
def test_impossible_limits_fail_before_anything_starts(bad):
    before = set(cgroup_manager().list_ids())
    with pytest.raises(InvalidArgument):
        run("busybox", ["true"], detach=True, resources=Resources.from_docker(**bad))
    assert set(cgroup_manager().list_ids()) == before      # no group was made


def test_update_checks_the_merged_limits_and_changes_nothing_when_refused():
    with_memory = run("busybox", ["sleep", "60"], detach=True,
                      resources=Resources.from_docker(mem_limit="32m", cpus="0.5"))
    bare = run("busybox", ["sleep", "60"], detach=True)
    try:
        with_memory.update(memswap_limit="64m")          # swap alone, memory already set
        stats = with_memory.cgroup.stats()
        assert (stats.memory_limit, stats.swap_limit) == (32 << 20, 32 << 20)
        assert with_memory.attrs["Resources"]["memory_swap"] == 64 << 20
        with pytest.raises(InvalidArgument, match="needs a memory limit"):
            bare.update(memswap_limit="64m")
        with pytest.raises(InvalidArgument, match="NanoCPUs has already been set"):
            with_memory.update(cpu_period=50000)
        assert with_memory.cgroup.stats().cpu_quota_us == 50000      # --cpus 0.5 kept
        assert with_memory.attrs["Resources"]["nano_cpus"] == 500_000_000
        with pytest.raises(InvalidArgument, match="--pids-limit"):
            with_memory.update(pids_limit="99999999999999999999")
    finally:
        with_memory.remove(force=True)
        bare.remove(force=True)


def test_pause_unpause_and_update_from_the_command_line():
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                              text=True, timeout=60)
    c = run("busybox", ["sleep", "60"], detach=True, name="cli-limits",
            resources=Resources.from_docker(mem_limit="32m"))
    try:
        assert cli("pause", "cli-limits").stdout == "cli-limits\n"
        assert "(Paused)" in cli("ps").stdout
        again = cli("pause", "cli-limits")
        assert again.returncode == 1 and "already paused" in again.stderr
        assert cli("unpause", "cli-limits").returncode == 0 and c.status == "running"
        bad = cli("update", "--memory", "12zb", "cli-limits")
        assert bad.returncode == 1 and "12zb" in bad.stderr
        assert cli("update", "cli-limits").returncode == 1          # no flag: nothing to do
        assert cli("update", "-m", "64m", "--pids-limit", "30", "cli-limits").returncode == 0
        stats = c.cgroup.stats()
        assert (stats.memory_limit, stats.pids_limit) == (64 << 20, 30)
        assert cli("update", "--memory-swap", "256m", "cli-limits").returncode == 0
        assert c.cgroup.stats().swap_limit == 192 << 20
        huge = cli("update", "--pids-limit", "99999999999999999999", "cli-limits")
        assert huge.returncode == 1 and "--pids-limit" in huge.stderr
        assert c.cgroup.stats().pids_limit == 30
    finally:
        c.remove(force=True)
