"""The null cgroup driver: for hosts where no cgroup can be created (a Binder pod, say).

It enforces no cgroup limit and says why (from the probe). Where `setrlimit` gives a real but
weaker limit, the container's child applies it before exec (`Cgroup.enter()`):

- memory -> RLIMIT_AS, a cap on *virtual address space*, not on memory in use. A program that
  reserves address space it never touches (thread stacks, malloc arenas, Go and Java heaps) can
  fail below the limit, and one that shares pages can use more RAM than it suggests. Exceeding it
  makes mmap/brk fail (MemoryError in Python, a NULL malloc in C): the process is *not*
  OOM-killed, so `oom_killed()` is always False here.
- pids -> RLIMIT_NPROC, which the kernel counts *per user*, over every process and thread of
  that user on the host, not per container. We set it to what the user already runs plus the
  container's limit, so the container gets roughly its budget, shared with anything else the
  user starts meanwhile. The kernel ignores it for root (CAP_SYS_RESOURCE/CAP_SYS_ADMIN).
- CPU: nothing. RLIMIT_CPU caps total CPU seconds (then SIGXCPU/SIGKILL), not a share of a
  CPU, so it is not a substitute for a quota and is not applied.

Pause uses SIGSTOP/SIGCONT on the process tree: unlike the freezer, the processes (and their
parent) can notice it. Statistics come from /proc through psutil: memory is the sum of resident
set sizes (shared pages counted once per process), CPU the sum of user and system time.
"""
import json
import os
import resource
import signal

import psutil

from ctrkernel import paths
from ctrkernel.errors import NotFound
from ctrkernel.runtime.cgroups import proctree
from ctrkernel.runtime.cgroups.base import Cgroup, CgroupManager, check_id
from ctrkernel.runtime.cgroups.resources import Resources


def _state_dir():
    return paths.subdir("cgroups", "none")


def user_task_count(uid):
    """Processes and threads owned by `uid` (what RLIMIT_NPROC is compared against)."""
    count = 0
    for p in psutil.process_iter(["uids", "num_threads"]):
        try:
            if p.info["uids"] and p.info["uids"].real == uid:
                count += p.info["num_threads"] or 1
        except (psutil.Error, TypeError):
            continue
    return count


def rlimits_for(resources, uid=None):
    """[(resource, (soft, hard))] giving the weaker setrlimit equivalents of `resources`."""
    limits = []
    if resources.memory is not None:
        limits.append((resource.RLIMIT_AS, (resources.memory, resources.memory)))
    pids = resources.effective_pids_limit
    if pids:
        uid = os.getuid() if uid is None else uid
        budget = user_task_count(uid) + pids
        limits.append((resource.RLIMIT_NPROC, (budget, budget)))
    return limits


def apply_rlimits(limits):
    """setrlimit each; lowering a hard limit is always allowed, raising it may not be."""
    for which, (soft, hard) in limits:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY and hard > current_hard:
            soft = hard = current_hard
        resource.setrlimit(which, (soft, hard))


class NullCgroup(Cgroup):
    driver = "none"
    enforces = False

    def __init__(self, container_id, resources, why_not, root_pids=(), frozen=False):
        super().__init__(container_id, resources)
        self.why_not = why_not
        self.root_pids = list(root_pids)
        self._frozen = frozen
        self.rlimits = rlimits_for(resources)
        self.notes = [why_not, "setrlimit applied instead where it is a real, weaker limit: "
                      "memory as RLIMIT_AS (address space), pids as RLIMIT_NPROC (per user)"]

    @property
    def _state_file(self):
        return _state_dir() / f"ctrkernel-{self.id}.json"

    def _save(self):
        self._state_file.write_text(json.dumps({
            "resources": self.resources.to_dict(), "pids": self.root_pids, "frozen": self._frozen}))

    def add_process(self, pid):
        if pid not in self.root_pids:
            self.root_pids.append(pid)
            self._save()

    def enter(self):
        """In the child before exec: apply the setrlimit limits (there is no group to join)."""
        apply_rlimits(self.rlimits)

    def update(self, resources):
        # A running process's rlimits can be changed from outside with prlimit(2).
        self.resources = self.resources.merged(resources)
        self.rlimits = rlimits_for(self.resources)
        for pid in self.pids():
            for which, limits in self.rlimits:
                try:
                    resource.prlimit(pid, which, limits)
                except (OSError, ValueError):
                    pass
        self._save()

    def _processes(self):
        return proctree.processes(self.root_pids)

    def pids(self):
        return sorted(p.pid for p in self._processes())

    def _signal_tree(self, sig):
        for p in self._processes():
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass

    def freeze(self):
        self._signal_tree(signal.SIGSTOP)
        self._frozen = True
        self._save()

    def thaw(self):
        self._signal_tree(signal.SIGCONT)
        self._frozen = False
        self._save()

    def frozen(self):
        return self._frozen

    def oom_killed(self):
        return False          # RLIMIT_AS makes allocations fail; nothing is OOM-killed

    def stats(self):
        return proctree.tree_stats(self._processes())

    def destroy(self):
        self._signal_tree(signal.SIGCONT)   # a stopped process would not die before SIGCONT
        self._signal_tree(signal.SIGKILL)
        self.root_pids = []
        try:
            self._state_file.unlink()
        except FileNotFoundError:
            pass


class NullManager(CgroupManager):
    driver = "none"
    enforces = False

    def __init__(self, why_not):
        self.why_not = why_not

    def create(self, container_id, resources=None):
        cg = NullCgroup(check_id(container_id), resources or Resources(), self.why_not)
        cg._save()
        return cg

    def open(self, container_id):
        path = _state_dir() / f"ctrkernel-{check_id(container_id)}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no cgroup record for container {container_id}") from None
        return NullCgroup(container_id, Resources.from_dict(data["resources"]), self.why_not,
                          data.get("pids", []), data.get("frozen", False))

    def list_ids(self):
        return sorted(p.name[len("ctrkernel-"):-len(".json")]
                      for p in _state_dir().glob("ctrkernel-*.json"))

    def rlimits(self, resources):
        return rlimits_for(resources)
