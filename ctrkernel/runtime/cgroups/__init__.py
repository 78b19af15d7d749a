"""Container resource limits through cgroups: one interface, three implementations.

    from ctrkernel.runtime.cgroups import Resources, cgroup_manager
    mgr = cgroup_manager()        # v1 | v2 | none, chosen once from doctor().cgroup["driver"]
    cg = mgr.create(container_id, Resources.from_docker(mem_limit="64m", nano_cpus=5e8))
    cg.enter()                    # in the child before exec (or cg.add_process(pid) from outside)
    cg.stats(); cg.freeze(); cg.thaw(); cg.update(Resources(memory=128 << 20))
    cg.oom_killed()               # at exit: True -> report exit 137 and OOMKilled
    cg.destroy()                  # kills what is left, removes the group
    mgr.list_stale(known_ids)     # groups left behind by a crash, for prune

- `v1`: one directory per controller (memory, cpu, cpuacct, pids, freezer, blkio), as runc's
  `libcontainer/cgroups/fs`.
- `v2`: one directory in the unified hierarchy, under the highest group we may write (the
  mount's root as root, the delegated group otherwise); controllers enabled via
  cgroup.subtree_control on the way down, swap limited separately (memory.swap.max), pause by
  cgroup.freeze, destroy by cgroup.kill (by killing each process where the kernel lacks it,
  before 5.14). A controller the hierarchy does not give us becomes a note (`cg.notes`) for
  each limit it would have enforced. Tested in a QEMU guest, the fallback too.
- `none`: nothing can be created; `mgr.enforces` is False and `mgr.why_not` says why. setrlimit
  gives weaker limits where it can (see none.py).

Groups are named `<hierarchy>/ctrkernel/<container id>` (v2: `<base>/ctrkernel/<container id>`).
"""
import threading

from ctrkernel.runtime.cgroups.base import Cgroup, CgroupError, CgroupManager
from ctrkernel.runtime.cgroups.resources import MIN_MEMORY, LimitUpdate, Resources
from ctrkernel.runtime.cgroups.stats import CgroupStats

__all__ = ["Resources", "LimitUpdate", "CgroupStats", "Cgroup", "CgroupManager", "CgroupError",
           "cgroup_manager", "manager_for", "MIN_MEMORY"]

_lock = threading.Lock()
_manager = None


def cgroup_manager() -> CgroupManager:
    """The manager for this host, chosen once per process from the probe."""
    global _manager
    with _lock:
        if _manager is None:
            from ctrkernel.host import doctor
            _manager = manager_for(doctor())
        return _manager


def manager_for(report) -> CgroupManager:
    """The manager a given HostReport calls for (tests pass reports of other hosts)."""
    layout = report.cgroup
    driver = layout.get("driver", "none")
    if driver == "v1":
        from ctrkernel.runtime.cgroups.v1 import V1Manager
        return V1Manager(layout["v1_mounts"])
    if driver == "v2":
        from ctrkernel.runtime.cgroups.v2 import V2Manager
        return V2Manager(layout["v2_mount"], layout.get("v2_group", "/"))
    from ctrkernel.runtime.cgroups.none import NullManager
    try:
        check = report.check("cgroups")
        why = f"no writable cgroup hierarchy ({check.detail})"
        if check.remedy:
            why += f". {check.remedy}"
    except KeyError:
        why = "the host probe found no writable cgroup hierarchy"
    return NullManager(why)
