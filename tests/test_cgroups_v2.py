"""The cgroup v2 driver: limits in v2 terms, and the real thing in a QEMU guest.

This host runs cgroup v1, so the v2 hierarchy is tested where it is real: one guest boot (the
host's kernel under QEMU, cgroup2 mounted at /sys/fs/cgroup) runs tests/cgroup_v2_guest.py with
the host's Python, which drives V2Manager on that mount and prints what each check measured;
each test below asserts one check. Under software emulation (TCG) the boot and the checks
take ~25 s, plus ~25 s once per session when no VM has been booted yet (the KVM trial boot
that picks the accelerator, cached in CTRKERNEL_HOME). The host's own cgroup2 mount (hybrid layout, without memory/cpu/pids) tests the other
case: a writable hierarchy missing controllers, where limits become notes.
Both kernels here have cgroup.kill (5.14); the guest also runs destroy with `v2.has_kill`
answering False, so the kill-by-pid fallback of older kernels is tested on the real hierarchy.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, host, requires
from ctrkernel.runtime.cgroups import Resources, v2
from ctrkernel.runtime.cgroups.v2 import V2Manager

MiB = 1 << 20


# ---- limits in v2 terms (pure) ------------------------------------------------------------------
@pytest.mark.parametrize("limits,expected", [
    (dict(mem_limit="32m"), 0),                                 # ctrkernel's default: no swap
    (dict(mem_limit="32m", memswap_limit="48m"), 16 * MiB),      # Docker's memory+swap total
    (dict(mem_limit="32m", memswap_limit="-1"), "max"),
    (dict(), "max")])
def test_swap_max_is_swap_alone(limits, expected):
    assert v2.swap_max(Resources.from_docker(**limits)) == expected


@pytest.mark.parametrize("limits,expected", [
    (dict(cpus="0.5"), "50000 100000"),
    (dict(cpu_quota=20000, cpu_period=50000), "20000 50000"),
    (dict(), "max 100000")])
def test_cpu_max_line(limits, expected):
    assert v2.cpu_max(Resources.from_docker(**limits)) == expected


def test_groups_from_the_mount_root_down_to_ours():
    assert v2.ancestors("/sys/fs/cgroup", "/a/b") == [
        "/sys/fs/cgroup", "/sys/fs/cgroup/a", "/sys/fs/cgroup/a/b"]
    assert v2.ancestors("/sys/fs/cgroup", "/") == ["/sys/fs/cgroup"]


# ---- this host's cgroup2 mount: writable, but the controllers are bound to v1 -------------------
def _host_v2_mount():
    layout = host().cgroup
    return layout.get("v2_mount"), layout.get("v2_group", "/")


@requires("root")
@pytest.mark.skipif(not _host_v2_mount()[0], reason="this host has no cgroup2 mount")
def test_on_a_hierarchy_without_controllers_each_limit_that_cannot_hold_is_a_note():
    mount, group = _host_v2_mount()
    manager = V2Manager(mount, group)
    cg = manager.create("v2-partial", Resources.from_docker(mem_limit="32m", cpus="0.5",
                                                            pids_limit=16))
    try:
        have = set(open(os.path.join(cg.path, "cgroup.controllers")).read().split())
        expected = {"memory": "33554432", "cpu": "50000 100000", "pids": "16"}
        files = {"memory": "memory.max", "cpu": "cpu.max", "pids": "pids.max"}
        for controller, value in expected.items():
            noted = [n for n in cg.notes if f"the {controller} controller" in n]
            if controller in have:
                assert open(os.path.join(cg.path, files[controller])).read().strip() == value
                assert not noted
            else:
                assert len(noted) == 1 and "could not be enabled" in noted[0]
        sleeper = subprocess.Popen(["sleep", "30"], preexec_fn=cg.enter)
        assert sleeper.pid in cg.pids() and manager.list_ids() == ["v2-partial"]
        assert cg.stats().pids == [sleeper.pid]
    finally:
        cg.destroy()
    assert sleeper.wait(timeout=10) == -9
    assert not os.path.exists(cg.path) and manager.list_ids() == []


# ---- the real v2 hierarchy, in a guest --------------------------------------------------------
GUEST = """
mount -t cgroup2 none /sys/fs/cgroup
[ -e /host/sys/fs/cgroup/cgroup.controllers ] || mount -t cgroup2 none /host/sys/fs/cgroup
chroot /host /usr/bin/env CTRKERNEL_HOME=/tmp/ctrkernel-home PYTHONPATH={repo} \\
    {python} {repo}/tests/cgroup_v2_guest.py
"""


def _guest_cannot_see_host():
    """Why the guest could not run the host's Python, or None."""
    from ctrkernel.errors import CtrkernelError
    from ctrkernel.vm import qemu
    from ctrkernel.vm.boot import share_kind
    try:
        if share_kind(qemu.find_kernel(None)) is None:
            return "the guest kernel has no 9p and virtiofsd is missing: no host root in the guest"
    except CtrkernelError as e:
        return str(e)
    return None


_no_share = host().ok("vm_kernel") and _guest_cannot_see_host()
guest_test = [requires("qemu", "vm_kernel", "busybox", "root"),
              pytest.mark.skipif(bool(_no_share), reason=str(_no_share))]


@pytest.fixture(scope="module")
def guest():
    from ctrkernel.vm import run_in_guest
    result = run_in_guest(GUEST.format(repo=REPO, python=sys.executable), timeout=240)
    line = next((ln for ln in result.output.splitlines() if ln.startswith("CGV2-RESULT ")), None)
    if line is None:
        pytest.fail(f"the guest printed no result (exit {result.exit_code}):\n"
                    f"{result.output[-3000:]}")
    return json.loads(line[len("CGV2-RESULT "):])


def item(guest, name):
    """One check's measurements; a check that raised in the guest fails here with its error."""
    found = guest.get(name)
    assert found is not None, f"the guest did not run the {name} check"
    assert "error" not in found, f"{name} failed in the guest: {found['error']}\n{found['trace']}"
    return found


def apply(marks):
    def wrap(fn):
        for mark in marks:
            fn = mark(fn)
        return fn
    return wrap


@apply(guest_test)
def test_probe_in_the_guest_chooses_the_v2_driver(guest):
    probe = item(guest, "probe")
    assert (probe["version"], probe["driver"], probe["v2_group"]) == ("v2", "v2", "/")
    assert {"memory", "cpu", "pids"} <= set(probe["writable"])
    assert guest["manager"] == {"class": "V2Manager", "enforces": True}


@apply(guest_test)
def test_limits_are_written_in_v2_terms(guest):
    files = item(guest, "files")
    assert files["path"] == "/sys/fs/cgroup/ctrkernel/files"
    assert (files["memory_max"], files["swap_max"]) == (str(32 * MiB), "0")
    assert (files["cpu_max"], files["pids_max"]) == ("50000 100000", "16")
    assert files["notes"] == []
    assert files["reopened"] == ("memory 32MiB (no swap), CPU quota 50000us per 100000us, "
                                 "16 processes")                 # read back by open()


@apply(guest_test)
def test_controllers_are_enabled_down_the_tree_and_the_parent_holds_no_process(guest):
    files = item(guest, "files")
    for key in ("root_subtree", "parent_subtree"):
        assert {"memory", "cpu", "pids"} <= set(files[key]), key
    assert files["parent_procs"] == ""


@apply(guest_test)
def test_memory_hog_is_oom_killed_and_reported(guest):
    oom = item(guest, "oom")
    assert oom["status"] == -9 and oom["oom_killed"] is True and oom["oom_kills"] >= 1
    assert oom["limit"] == 32 * MiB and oom["peak"] <= 32 * MiB


@apply(guest_test)
def test_half_a_cpu_holds_a_busy_loop_near_fifty_percent(guest):
    cpu = item(guest, "cpu")
    assert 0.35 <= cpu["fraction"] <= 0.65, f"{cpu['fraction']:.2f} CPU"
    assert cpu["throttled_periods"] > 0 and cpu["throttled_ns"] > 0
    assert guest["reaped"]["cpu"] == -9


@apply(guest_test)
def test_stats_of_a_running_group_are_sane(guest):
    cpu = item(guest, "cpu")
    assert 0 < cpu["memory_usage"] < cpu["memory_limit"] == 32 * MiB
    assert cpu["swap_limit"] == 0 and cpu["memory_stat_anon"] > 0
    assert (cpu["quota_us"], cpu["period_us"]) == (50000, 100000)
    assert cpu["pids"] == [cpu["burner_pid"]] and cpu["pids_current"] == 1
    assert cpu["pids_limit"] == 16


@apply(guest_test)
def test_fork_loop_stops_at_the_process_limit(guest):
    pids = item(guest, "pids")
    assert "fork" in pids["stderr"]
    assert pids["pids_limit"] == 16 and pids["pids_current"] <= 16
    assert pids["refused_forks"] >= 1


@apply(guest_test)
def test_freeze_stops_a_counter_and_thaw_resumes_it(guest):
    freeze = item(guest, "freeze")
    assert freeze["frozen"] is True and "frozen 1" in freeze["events"]
    assert freeze["during"] == freeze["at"], "the counter advanced while frozen"
    assert freeze["after"] > freeze["during"], "the counter did not resume after thaw"
    assert freeze["refrozen"] is True
    assert guest["reaped"]["freeze"] == -9            # destroy killed a frozen group


@apply(guest_test)
def test_update_changes_the_limits_of_a_live_group(guest):
    update = item(guest, "update")
    assert update["memory_max"] == str(64 * MiB) and update["stats_memory_limit"] == 64 * MiB
    assert update["swap_max"] == "0"                  # still no swap
    assert update["cpu_max"] == "100000 100000" and update["pids_max"] == "16"


@apply(guest_test)
def test_destroy_leaves_no_group(guest):
    destroyed = item(guest, "destroyed")
    assert all(destroyed["gone"].values()), destroyed["gone"]
    assert destroyed["list_ids"] == [] and destroyed["stale"] == []
    assert destroyed["parent_exists"] is False


@apply(guest_test)
def test_a_delegated_user_gets_what_the_delegation_passes_down(guest):
    d = item(guest, "delegation")
    assert d["base"] == "/sys/fs/cgroup/deleg"
    assert (d["memory_max"], d["pids_max"]) == (str(32 * MiB), "16")
    assert d["has_cpu_max"] is False
    assert len(d["notes"]) == 1 and "cpu controller" in d["notes"][0]
    assert d["sleeper_in_group"] is True and d["sleeper_status"] == -9 and d["removed"] is True


# ---- kernels before 5.14 (no cgroup.kill): destroy kills by pid, on the real hierarchy ----------
FALLBACK_SECONDS = 4.0      # kill_all gives up after 5 s: a slower destroy means a stuck task


def _killed_by_fallback(found, frozen):
    assert found["started"] is True and len(found["pids"]) >= 4, found
    assert len(found["inner_pids"]) == 1                 # one task in the container's subgroup
    assert found["kill_file_present"] is True            # the guest kernel has cgroup.kill...
    assert found["asked"] == 1                           # ...and destroy was told it has not
    if frozen:
        assert "frozen 1" in found["frozen_events"]
    assert found["alive"] == [], f"left alive by the fallback: {found['alive']}"
    assert found["shell_status"] == -9
    assert found["group_exists"] is False and found["inner_exists"] is False
    assert found["destroy_seconds"] < FALLBACK_SECONDS, f"{found['destroy_seconds']:.2f} s"


@apply(guest_test)
def test_without_cgroup_kill_destroy_kills_every_process_and_removes_the_group(guest):
    _killed_by_fallback(item(guest, "fallback_kill"), frozen=False)


@apply(guest_test)
def test_without_cgroup_kill_destroy_kills_a_frozen_group(guest):
    _killed_by_fallback(item(guest, "fallback_kill_frozen"), frozen=True)


@apply(guest_test)
def test_a_frozen_task_dies_of_sigkill_without_a_thaw(guest):
    # Why the fallback may kill before it thaws: nothing in the group runs again meanwhile.
    f = item(guest, "frozen_sigkill")
    assert f["died_while_frozen"] is True and f["still_frozen"] is True
    assert "frozen 1" in f["events"]
