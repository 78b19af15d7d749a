"""Where samples come from: a container, one of our cgroups, a process tree, or this session's
own cgroup. Each source's `read()` returns a `Sample` (or None once its target is gone).

- `ContainerSource`: the container's cgroup through `Cgroup.stats()` (v1 or v2 files);
  where the null driver gave it no cgroup, its process tree from /proc (psutil).
- `CgroupSource`: any `Cgroup` object of ours.
- `ProcessTreeSource`: a process and its descendants, from /proc with psutil, where no cgroup of
  ours exists (a plain process, or every container on a Binder-like host).
- `SessionCgroupSource`: the cgroup this Python process lives in (a Binder pod's, say), read-only
  from /proc/self/cgroup and /sys/fs/cgroup, and labelled as such: nothing of ours limits it.
"""
import os
import time

import psutil

from ctrkernel.errors import CtrkernelError, InvalidArgument
from ctrkernel.metrics import fastread
from ctrkernel.metrics.fastread import read_cgroup
from ctrkernel.metrics.sample import Sample, online_cpus, system_cpu_ns
from ctrkernel.runtime.cgroups import parse, proctree
from ctrkernel.runtime.cgroups.stats import CgroupStats


class Source:
    name = "?"
    kind = "?"                 # "container", "cgroup", "process tree", "session cgroup"
    enforced = False           # whether the limits shown are enforced by the kernel
    label = ""                 # one line saying what is measured and how

    def read_stats(self):
        raise NotImplementedError

    def status(self):
        return "running"

    reader = None              # a FileReader shared by the sources of one Recorder

    def read(self, host=None):
        """One Sample, or None when the target no longer exists. `host` is (system_cpu_ns,
        online_cpus) when the caller read them once for a whole round."""
        status = self.status()
        if status == "removed":
            return None
        try:
            stats = self.read_stats()
        except (OSError, psutil.Error, CtrkernelError):
            return None
        if stats is None:
            return None
        system, cpus = host or (system_cpu_ns(), online_cpus())
        return Sample(self.name, stats, system, cpus, status)

    def _cgroup_stats(self, cgroup):
        if self.reader is not None:
            return read_cgroup(self.reader, cgroup)
        return cgroup.stats()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}: {self.label}>"


# ---- /proc ------------------------------------------------------------------------------------
def process_tree_stats(roots):
    """CgroupStats(source="proc") of live processes `roots` and their descendants, or None
    when none is alive."""
    procs = proctree.processes(roots)
    return proctree.tree_stats(procs) if procs else None


class ProcessTreeSource(Source):
    kind = "process tree"

    def __init__(self, process, name=None):
        if hasattr(process, "pid") and not isinstance(process, psutil.Process):
            name = name or (getattr(process, "name", None) if isinstance(
                getattr(process, "name", None), str) else None)
            process = process.pid                     # a subprocess.Popen
        self.process = process if isinstance(process, psutil.Process) else psutil.Process(process)
        self.name = name or f"pid {self.process.pid}"
        self.label = (f"process {self.process.pid} and its descendants, from /proc (psutil): "
                      "no cgroup, so no limit")
        self._last_cpu = 0

    def read_stats(self):
        stats = process_tree_stats([self.process])
        if stats is None:                 # it ended: keep a point at zero so the exit shows
            stats = CgroupStats(source="proc", memory_usage=0, pids_current=0,
                                cpu_usage_ns=self._last_cpu)
        self._last_cpu = stats.cpu_usage_ns
        return stats

    def status(self):
        try:
            alive = self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        return "running" if alive else "exited"


# ---- our cgroups ------------------------------------------------------------------------------
class CgroupSource(Source):
    kind = "cgroup"

    def __init__(self, cgroup, name=None):
        self.cgroup = cgroup
        self.name = name or f"cgroup {str(cgroup.id)[:12]}"
        self.enforced = bool(cgroup.enforces)
        self.label = f"cgroup {cgroup.driver} {getattr(cgroup, 'path', '') or ''}".strip()

    def read_stats(self):
        return self._cgroup_stats(self.cgroup)


class ContainerSource(Source):
    kind = "container"

    def __init__(self, container):
        self.container = container
        self.name = container.name
        self.cgroup = container.cgroup
        self.enforced = bool(self.cgroup is not None and self.cgroup.enforces)
        self._pid = container.pid
        self._last_cpu = 0
        self._status, self._checked = None, 0.0
        self._status_file = os.path.join(container.dir, "status.json")
        if self.enforced:
            self.label = (f"container {container.short_id}: cgroup {self.cgroup.driver} "
                          f"{getattr(self.cgroup, 'path', '') or ''}").strip()
        else:
            why = getattr(self.cgroup, "why_not", "") or "no cgroup"
            self.label = (f"container {container.short_id}: its processes from /proc (limits "
                          f"not enforced: {why})")

    def read_stats(self):
        if self.enforced:
            return self._cgroup_stats(self.cgroup)
        try:
            roots = [psutil.Process(self._pid)] if self._pid else []
        except psutil.NoSuchProcess:
            roots = []
        stats = process_tree_stats(roots)
        if stats is None:                  # exited (or not started): nothing left to count
            stats = CgroupStats(source="proc", memory_usage=0, pids_current=0,
                                cpu_usage_ns=self._last_cpu)
        self._last_cpu = stats.cpu_usage_ns
        r = getattr(self.cgroup, "resources", None)   # the limits asked for, to draw them
        if r is not None:
            stats.memory_limit = r.memory
            stats.pids_limit = r.effective_pids_limit or None
            quota, period = r.cfs()
            if quota and quota > 0:
                stats.cpu_quota_us, stats.cpu_period_us = quota, period
        return stats

    FULL_CHECK_EVERY = 4.0     # s: how often a running container's state is read in full

    def status(self):
        # While it runs, a stat() of two paths says enough: the shim writes status.json when
        # the container ends, and removal deletes its directory. The full state (JSON files,
        # liveness of the shim) is read when those change and every few seconds.
        c = self.container
        now = time.monotonic()
        if self._status == "running" and now - self._checked < self.FULL_CHECK_EVERY \
                and not os.path.exists(self._status_file) and os.path.isdir(c.dir):
            return "running"
        self._checked = now
        self._status = self._full_status()
        return self._status

    def _full_status(self):
        c = self.container
        try:
            c.reload()
        except CtrkernelError:
            return "removed"
        state = c.state
        if state["Status"] != "exited":
            return state["Status"]
        code = state["ExitCode"]
        oom = state["OOMKilled"]
        if not oom and self.enforced:
            try:
                oom = self.cgroup.oom_killed()
            except (OSError, CtrkernelError):
                pass
        return f"exited ({code}{', OOM killed' if oom else ''})"


# ---- the session's own cgroup (read-only) -----------------------------------------------------
def cgroup_mounts():
    """{controller: mount point} for v1 hierarchies and {"": mount} for cgroup2 (psutil)."""
    mounts = {}
    for part in psutil.disk_partitions(all=True):
        if part.fstype == "cgroup2":
            mounts.setdefault("", part.mountpoint)
        elif part.fstype == "cgroup":
            for opt in part.opts.split(","):
                if opt in ("memory", "cpu", "cpuacct", "pids", "blkio", "freezer"):
                    mounts.setdefault(opt, part.mountpoint)
    return mounts


class SessionCgroupSource(Source):
    """The cgroup this process runs in, observed read-only. On a Binder pod this is the pod's
    limit (set by Kubernetes, not by us): the one cgroup a learner there can see at work."""
    kind = "session cgroup"

    def __init__(self, pid=None, name="this session"):
        self.pid = pid or os.getpid()
        with open(f"/proc/{self.pid}/cgroup") as f:
            paths = parse.proc_cgroup(f.read())
        mounts = cgroup_mounts()
        self.dirs = {c: os.path.join(m, paths[c].lstrip("/")) for c, m in mounts.items()
                     if c and c in paths and os.path.isdir(os.path.join(m, paths[c].lstrip("/")))}
        self.paths = paths
        if self.dirs:
            self.version = "v1"
        elif "" in mounts and "" in paths:
            self.version = "v2"
            self.dirs = {"": os.path.join(mounts[""], paths[""].lstrip("/"))}
        else:
            raise InvalidArgument("no cgroup hierarchy is visible to this process")
        self.name = name
        self._own_reader = fastread.FileReader()
        pids_dir = self.dirs.get("pids")
        self._counts_pids = bool(pids_dir) and os.path.exists(os.path.join(pids_dir,
                                                                         "pids.current"))
        shown = {c or "unified": paths.get(c, "/") for c in self.dirs}
        where = ", ".join(f"{c}:{p}" + (" (the root: the whole machine)" if p == "/" else "")
                          for c, p in sorted(shown.items()))
        self.label = (f"this session's own cgroup {self.version}, observed read-only, not "
                      f"created or limited by ctrkernel: {where}")

    def read_stats(self):
        reader = self.reader or self._own_reader
        if self.version == "v2":
            stats = fastread.read_v2(reader, self.dirs[""])
        else:
            stats = fastread.read_v1(reader, self.dirs)
            if not self._counts_pids:
                stats.pids_current = stats.pids_limit = None   # the root group does not count
        stats.source = f"cgroup {self.version} (this session's, read-only)"
        return stats


def source_for(target, name=None):
    """A Source for a container, a Cgroup, a pid / psutil.Process / Popen, "session", or a
    Source already."""
    if isinstance(target, Source):
        return target
    if target == "session":
        return SessionCgroupSource()
    from ctrkernel.runtime.container import Container
    if isinstance(target, Container):
        return ContainerSource(target)
    from ctrkernel.runtime.cgroups import Cgroup
    if isinstance(target, Cgroup):
        return CgroupSource(target, name)
    if isinstance(target, (int, psutil.Process)) or hasattr(target, "pid"):
        return ProcessTreeSource(target, name)
    if isinstance(target, str):
        from ctrkernel.runtime import get
        return ContainerSource(get(target))
    raise InvalidArgument(f"cannot sample {target!r}: give a container, a cgroup, a process "
                          "or 'session'")
