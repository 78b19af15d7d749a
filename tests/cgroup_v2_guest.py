"""The cgroup v2 driver against a real v2 hierarchy: run as root inside a QEMU guest.

tests/test_cgroups_v2.py boots the host's kernel, mounts cgroup2 at /sys/fs/cgroup and runs
this file with the host's Python (`chroot /host .venv/bin/python ...`). It prints one line
"CGV2-RESULT {json}" with what each check measured; the host-side test asserts on it, so that a
failure names the check. A check that raises records {"error": "..."} and the others still run.
Workloads are busybox shells (fork+exec, joining the group from the child with `enter()`):
a Python per workload would cost seconds each under software emulation.
"""
import json
import os
import subprocess
import sys
import time
import traceback

from ctrkernel._probe import cgroup_layout
from ctrkernel.errors import NotFound
from ctrkernel.host import Check, HostReport
from ctrkernel.runtime.cgroups import Resources, manager_for, v2
from ctrkernel.runtime.cgroups.base import exited
from ctrkernel.runtime.cgroups.v2 import V2Manager

MOUNT = "/sys/fs/cgroup"
BUSYBOX = "/bin/busybox"
LIMITS = dict(mem_limit="32m", memswap_limit="32m", cpus="0.5", pids_limit=16)
HOG = "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"
BURN = "while :; do :; done"
BOMB = "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait"
# written then renamed: a reader never sees the file empty between truncation and write
COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/cgv2-n.new; mv /tmp/cgv2-n.new /tmp/cgv2-n; sleep 0.05; done"

# A container's process family for the kill-by-pid fallback: a shell ignoring SIGTERM, a child
# in a tight loop, one ignoring SIGTERM, and one that moved itself into a group the container
# made below its own ({inner}), all waited for by the shell.
FAMILY = ("trap '' TERM; (while :; do :; done) & (trap '' TERM; exec sleep 300) & "
          + BUSYBOX + " sh -c 'echo $$ > {inner}/cgroup.procs && exec sleep 300' & wait")

results = {}


def check(fn):
    """Run one check, keeping what it measured or the error it hit."""
    started = time.monotonic()
    try:
        results[fn.__name__] = fn()
    except Exception as e:
        results[fn.__name__] = {"error": f"{type(e).__name__}: {e}",
                                "trace": traceback.format_exc()[-800:]}
    results[fn.__name__]["seconds"] = round(time.monotonic() - started, 2)
    return fn


def spawn(cg, script, **kw):
    return subprocess.Popen([BUSYBOX, "sh", "-c", script], preexec_fn=cg.enter, **kw)


def cat(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read().strip()


def until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


# Before anything enables cpu at the root: a user given /deleg (systemd-style delegation),
# where the root passes down only memory and pids.
@check
def delegation():
    with open(os.path.join(MOUNT, "cgroup.subtree_control"), "w") as f:
        f.write("+memory +pids")
    deleg, session = os.path.join(MOUNT, "deleg"), os.path.join(MOUNT, "deleg", "session")
    os.makedirs(session)
    for path in (deleg, session):
        os.chown(path, 1000, 1000)
        for name in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(path, name), 1000, 1000)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                               # the delegated user's session
        out = {}
        try:
            with open(os.path.join(session, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            os.setgid(1000)
            os.setuid(1000)
            manager = V2Manager(MOUNT, "/deleg/session")
            cg = manager.create("deleg1", Resources.from_docker(**LIMITS))
            sleeper = spawn(cg, "sleep 30")
            out = {"base": manager.base, "notes": cg.notes,
                   "memory_max": cat(cg.path, "memory.max"), "pids_max": cat(cg.path, "pids.max"),
                   "has_cpu_max": os.path.exists(os.path.join(cg.path, "cpu.max")),
                   "sleeper_in_group": sleeper.pid in cg.pids()}
            cg.destroy()
            out["sleeper_status"] = sleeper.wait(timeout=10)
            out["removed"] = not os.path.exists(cg.path) and not os.path.exists(manager.parent)
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"
        os.write(write_end, json.dumps(out).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    os.rmdir(session)
    os.rmdir(deleg)
    return json.loads(data)


@check
def probe():
    layout = cgroup_layout()
    return {k: layout[k] for k in ("version", "driver", "v2_mount", "v2_group", "writable")}


report = HostReport.from_checks([Check("cgroups", True, "v2 in a guest", cgroup_layout())])
manager = manager_for(report)
results["manager"] = {"class": type(manager).__name__, "enforces": manager.enforces}


def create(name):
    return manager.create(name, Resources.from_docker(**LIMITS))


@check
def files():
    cg = create("files")
    try:
        parent = os.path.dirname(cg.path)
        return {"path": cg.path, "notes": cg.notes, "memory_max": cat(cg.path, "memory.max"),
                "swap_max": cat(cg.path, "memory.swap.max"), "cpu_max": cat(cg.path, "cpu.max"),
                "pids_max": cat(cg.path, "pids.max"),
                "root_subtree": cat(MOUNT, "cgroup.subtree_control").split(),
                "parent_subtree": cat(parent, "cgroup.subtree_control").split(),
                "parent_procs": cat(parent, "cgroup.procs"),
                "reopened": manager.open("files").resources.describe()}
    finally:
        cg.destroy()


@check
def oom():
    cg = create("oom")
    try:
        hog = spawn(cg, HOG)
        status = hog.wait(timeout=60)
        stats = cg.stats()
        return {"status": status, "oom_killed": cg.oom_killed(), "oom_kills": stats.oom_kills,
                "peak": stats.memory_max_usage, "limit": stats.memory_limit}
    finally:
        cg.destroy()


@check
def cpu():
    cg = create("cpu")
    burner = spawn(cg, BURN)
    try:
        time.sleep(0.3)
        first, t0 = cg.stats().cpu_usage_ns, time.monotonic()
        time.sleep(2)
        stats = cg.stats()
        fraction = (stats.cpu_usage_ns - first) / 1e9 / (time.monotonic() - t0)
        return {"fraction": round(fraction, 3), "throttled_periods": stats.cpu_throttled_periods,
                "throttled_ns": stats.cpu_throttled_ns, "quota_us": stats.cpu_quota_us,
                "period_us": stats.cpu_period_us, "pids": stats.pids,
                "burner_pid": burner.pid, "memory_usage": stats.memory_usage,
                "memory_limit": stats.memory_limit, "swap_limit": stats.swap_limit,
                "pids_current": stats.pids_current, "pids_limit": stats.pids_limit,
                "memory_stat_anon": stats.memory_stat.get("anon")}
    finally:
        cg.destroy()
        results.setdefault("reaped", {})["cpu"] = burner.wait(timeout=10)


@check
def pids():
    cg = create("pids")
    err_path = "/tmp/cgv2-bomb.err"
    with open(err_path, "w") as err:
        bomb = spawn(cg, BOMB, stderr=err)
    try:
        until(lambda: "fork" in open(err_path).read(), 20)
        time.sleep(0.2)
        stats = cg.stats()
        max_events = int(dict(line.split() for line in cat(cg.path, "pids.events").splitlines())
                         .get("max", 0))
        return {"stderr": open(err_path).read()[-200:], "pids_current": stats.pids_current,
                "pids_limit": stats.pids_limit, "refused_forks": max_events}
    finally:
        cg.destroy()
        results.setdefault("reaped", {})["pids"] = bomb.wait(timeout=10)


@check
def freeze():
    cg = create("freeze")

    def count():
        try:
            return int(cat("/tmp/cgv2-n") or 0)
        except (OSError, ValueError):
            return 0
    counter = spawn(cg, COUNTER)
    try:
        until(lambda: count() > 3, 20)
        cg.freeze()
        events = cat(cg.path, "cgroup.events")
        frozen, at = cg.frozen(), count()
        time.sleep(0.6)
        during = count()
        cg.thaw()
        time.sleep(0.6)
        after = count()
        cg.freeze()                           # destroy must also work on a frozen group
        return {"frozen": frozen, "events": events, "at": at, "during": during, "after": after,
                "refrozen": cg.frozen()}
    finally:
        cg.destroy()
        results.setdefault("reaped", {})["freeze"] = counter.wait(timeout=10)


@check
def update():
    cg = create("update")
    try:
        cg.update(Resources(memory=64 << 20))
        cg.update(Resources.from_docker(cpus="1"))
        stats = cg.stats()
        return {"memory_max": cat(cg.path, "memory.max"),
                "swap_max": cat(cg.path, "memory.swap.max"),
                "cpu_max": cat(cg.path, "cpu.max"), "pids_max": cat(cg.path, "pids.max"),
                "stats_memory_limit": stats.memory_limit}
    finally:
        cg.destroy()


def destroy_without_kill_file(cg):
    """cg.destroy() as on a kernel before 5.14: v2.has_kill (destroy's one decision between
    cgroup.kill and the fallback) answers False for the duration. Returns (seconds, times
    destroy asked)."""
    asked, real = [], v2.has_kill
    v2.has_kill = lambda directory: asked.append(directory) or False
    try:
        started = time.monotonic()
        cg.destroy()
        return time.monotonic() - started, len(asked)
    finally:
        v2.has_kill = real


def family_killed_by_fallback(name, frozen):
    """Start FAMILY in a new group (frozen if asked), destroy it through the fallback and report
    what a user relies on: every process dead, the directories gone, in bounded time."""
    cg = create(name)
    inner = os.path.join(cg.path, "inner")
    os.mkdir(inner)
    shell = spawn(cg, FAMILY.format(inner=inner))
    try:
        started = until(lambda: len(cg.pids()) >= 4 and cat(inner, "cgroup.procs") != "", 30)
        pids, inner_pids = cg.pids(), cat(inner, "cgroup.procs").split()
        out = {"started": started, "pids": pids, "inner_pids": inner_pids,
               "kill_file_present": v2.has_kill(cg.path)}
        if frozen:
            cg.freeze()
            out["frozen_events"] = cat(cg.path, "cgroup.events")
        out["destroy_seconds"], out["asked"] = destroy_without_kill_file(cg)
        out["shell_status"] = shell.wait(timeout=10)
        out["alive"] = [p for p in pids if not exited(p)]
        out["group_exists"] = os.path.exists(cg.path)
        out["inner_exists"] = os.path.exists(inner)
        return out
    finally:
        cg.destroy()                          # only acts if the fallback left the group
        if shell.poll() is None:
            shell.kill()
            shell.wait()


@check
def fallback_kill():
    return family_killed_by_fallback("nokill", frozen=False)


@check
def fallback_kill_frozen():
    return family_killed_by_fallback("nokill-frozen", frozen=True)


@check
def frozen_sigkill():
    """Does SIGKILL alone end a task of a frozen v2 group (cgroup-v2.rst says it does), or must
    the fallback thaw first? Measured here, with its own group."""
    cg = create("frozen-sigkill")
    sleeper = spawn(cg, "exec sleep 300")
    try:
        until(lambda: sleeper.pid in cg.pids(), 20)
        cg.freeze()
        os.kill(sleeper.pid, 9)
        died = until(lambda: sleeper.poll() is not None, 3)
        return {"died_while_frozen": died, "still_frozen": cg.frozen(),
                "events": cat(cg.path, "cgroup.events")}
    finally:
        cg.destroy()
        sleeper.wait(timeout=10)


@check
def destroyed():
    gone = {}
    for name in ("files", "oom", "cpu", "pids", "freeze", "update", "nokill", "nokill-frozen",
                 "frozen-sigkill"):
        try:
            manager.open(name)
            gone[name] = False
        except NotFound:
            gone[name] = True
    return {"gone": gone, "list_ids": manager.list_ids(),
            "parent_exists": os.path.exists(os.path.join(MOUNT, "ctrkernel")),
            "stale": manager.list_stale([])}


print("CGV2-RESULT " + json.dumps(results), flush=True)
sys.exit(0)
