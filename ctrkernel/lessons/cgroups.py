"""Notebook helpers for chapter 03 (cgroups): workloads, starting them with limits, watching them.

The workloads are busybox shell one-liners, so they run in the builtin `busybox` image:
- `memory_hog`: grows a shell variable by 1 MiB steps. It stops by itself at `stop_mb`, so that
  on a host where no limit is enforced it cannot eat the machine.
- `cpu_burner`: `loops` shell loops that never sleep.
- `fork_bomb`: copies starting copies, bounded (a tree of 2**depth processes that sleep, then
  end) so that it is safe where no limit is enforced; `unbounded_fork_bomb` is the classic.

`start()` runs one in a container with Docker's limits and, where containers cannot run at all,
as a plain process tree (and says so). `watch()` samples targets into a Dashboard: live in
JupyterLab, and a static figure everywhere with `dash.figure()`.
"""
import os
import shutil
import subprocess
import time

import psutil

from ctrkernel.errors import CtrkernelError

MIB = 2 ** 20


# ---- workloads ---------------------------------------------------------------------------------
def memory_hog(step_mb=1, stop_mb=256, pause=0.25):
    """sh that adds `step_mb` MiB to a string every `pause` s until it holds `stop_mb` MiB."""
    return ("a=$(head -c %d /dev/zero | tr '\\0' x); s=; i=0; "
            "while [ $i -lt %d ]; do s=\"$s$a\"; i=$((i+1)); echo \"$((i*%d)) MiB\"; "
            "sleep %s; done; echo 'stopped by itself at %d MiB'; sleep 1"
            % (step_mb * MIB, stop_mb // step_mb, step_mb, pause, stop_mb))


def cpu_burner(loops=1, seconds=None):
    """sh running `loops` busy loops (for `seconds`, else forever)."""
    body = "while :; do :; done"
    if seconds:
        body = f"end=$(($(date +%s)+{int(seconds)})); while [ $(date +%s) -lt $end ]; do :; done"
    if loops == 1:
        return body
    return f"for i in $(seq {loops}); do ( {body} ) & done; wait"


def fork_bomb(depth=7, sleep=20):
    """A fork bomb that wants 2**depth processes (each copy starts two more, down `depth`
    levels; the last level sleeps `sleep` s, then all end). Bounded, so that it is safe to run
    where no limit is enforced; at a pids limit the copies that cannot fork die and those that
    could hold the group at its limit."""
    return (f"b() {{ if [ $1 -gt 0 ]; then b $(($1-1)) & b $(($1-1)); wait; "
            f"else sleep {sleep}; fi; }}; b {int(depth)}")


def unbounded_fork_bomb():
    """The classic shape, `b() { b | b & }; b`: it never stops by itself. Under busybox's ash a
    copy whose fork() fails exits, so at a pids limit this one burns out within a second; with
    no limit at all it would exhaust the host. Run it only in a container with a pids limit."""
    return "b() { b | b & }; b"


# ---- what this machine can do -----------------------------------------------------------------
def limits_enforced():
    from ctrkernel.runtime.cgroups import cgroup_manager
    return cgroup_manager().enforces


def machine():
    """A few lines on what this machine enforces (for the notebooks' opening cell)."""
    from ctrkernel.host import doctor
    from ctrkernel.runtime.cgroups import cgroup_manager
    report, mgr = doctor(), cgroup_manager()
    lines = [f"isolation: {report.isolation}",
             f"cgroup hierarchy: {report.cgroup.get('version')}, driver {mgr.driver}",
             "limits enforced: " + ("yes, by the kernel (cgroups)" if mgr.enforces else
                                    f"NO: {mgr.why_not}")]
    if not mgr.enforces:
        lines.append("fallback: containers run with setrlimit where it gives a weaker limit; "
                     "metrics come from /proc; this session's own cgroup can be observed")
    return "\n".join(lines)


# ---- starting and stopping --------------------------------------------------------------------
class PlainProcess:
    """A workload run as a plain host process where no container can start (said loudly)."""

    def __init__(self, command, name):
        sh = shutil.which("busybox")
        argv = [sh, "sh", "-c", command] if sh else ["sh", "-c", command]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
        self.name, self.pid = name, self.popen.pid

    def wait(self, timeout=None):
        code = self.popen.wait(timeout)
        return {"StatusCode": code if code >= 0 else 128 - code, "OOMKilled": False}

    def remove(self, force=True):
        try:
            os.killpg(self.pid, 9)
        except ProcessLookupError:
            pass
        self.popen.wait()


def start(command, name, memory=None, cpus=None, pids_limit=None):
    """Run `command` (sh) detached in a busybox container with Docker-style limits
    (memory="32m", cpus=0.5, pids_limit=32). Returns the Container, or a PlainProcess (with a
    printed note) where this machine cannot run a container at all."""
    from ctrkernel.runtime import get, run
    from ctrkernel.runtime.cgroups import Resources
    try:                                            # a re-run cell: replace the old one
        get(name).remove(force=True)
    except CtrkernelError:
        pass
    resources = Resources.from_docker(mem_limit=memory, nano_cpus=cpus and int(cpus * 1e9),
                                      pids_limit=pids_limit)
    try:
        return run("busybox", ["sh", "-c", command], detach=True, name=name,
                   resources=resources)
    except CtrkernelError as e:
        print(f"no container can run here ({e}); running {name} as a plain process instead")
        return PlainProcess(command, name)


def remove(*targets):
    for t in targets:
        try:
            t.remove(force=True)
        except (CtrkernelError, OSError):
            pass


def outcome(target, timeout=30):
    """How it ended: exit status and OOMKilled, as `docker inspect` reports them."""
    result = target.wait(timeout=timeout)
    return {"name": target.name, "ExitCode": result["StatusCode"],
            "OOMKilled": result.get("OOMKilled", False)}


def limit_files(container):
    """{file: content} of the cgroup files that hold this container's limits (v1 or v2)."""
    cg = getattr(container, "cgroup", None)
    if cg is None or not cg.enforces:
        why = getattr(cg, "why_not", "") or "no cgroup"
        return {"(no cgroup files)": f"limits not enforced here: {why}"}
    files = {}
    dirs = getattr(cg, "dirs", None) or {"": getattr(cg, "path", "")}
    wanted = {"memory": ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
              "cpu": ["cpu.cfs_quota_us", "cpu.cfs_period_us"], "pids": ["pids.max"],
              "": ["memory.max", "memory.swap.max", "cpu.max", "pids.max"]}
    for controller, names in wanted.items():
        directory = dirs.get(controller)
        for name in names if directory else []:
            path = os.path.join(directory, name)
            try:
                with open(path) as f:
                    files[path] = f.read().strip()
            except OSError:
                continue
    return files


# ---- watching ---------------------------------------------------------------------------------
def watch(*targets, seconds=10, until=None, interval=0.25, title=None):
    """Sample targets for `seconds` (or until `until(recorder)`), showing the live dashboard
    where a widget front end is attached. Returns the Dashboard: `dash.figure()` is the static
    figure of what was recorded (what an executed notebook keeps)."""
    from ctrkernel.widgets import Dashboard
    dash = Dashboard(*targets, interval=interval, title=title)
    dash.show()
    dash.record(seconds, until=until)
    return dash


def all_stopped(recorder):
    """An `until` for watch(): every target has stopped running."""
    return all(pts and pts[-1].status != "running" for pts in
               (recorder.points(n) for n in recorder.series))


def rlimits_in_words(memory=None, pids_limit=None):
    """The setrlimit stand-ins the null cgroup driver would apply, by name ("none needed" where
    cgroups enforce the limits)."""
    import resource
    from ctrkernel.runtime.cgroups import Resources, cgroup_manager
    names = {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}
    limits = cgroup_manager().rlimits(Resources.from_docker(mem_limit=memory,
                                                            pids_limit=pids_limit))
    return {names.get(which, str(which)): soft for which, (soft, _) in limits} or "none needed"


def fork_refusals(container):
    """How many fork()s the kernel refused because the group was at its pids limit
    (the "max" counter of pids.events), or None where there is no pids cgroup of ours."""
    cg = getattr(container, "cgroup", None)
    if cg is None or not cg.enforces:
        return None
    directory = (getattr(cg, "dirs", None) or {}).get("pids") or getattr(cg, "path", None)
    try:
        with open(os.path.join(str(directory), "pids.events")) as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def host_check():
    """Can the host still start a process, and how many are there? (during a fork bomb)"""
    t0 = time.perf_counter()
    subprocess.run(["true"], check=True)
    return {"host processes": len(psutil.pids()),
            "ms to start a host process": round((time.perf_counter() - t0) * 1000, 1)}
