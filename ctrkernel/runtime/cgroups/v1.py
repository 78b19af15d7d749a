"""cgroup v1: one directory per controller, one small function per controller (runc's fs/).

A container's group is `<mount of controller>/ctrkernel/<id>` in each of the memory, cpu,
cpuacct, pids, freezer and blkio hierarchies (co-mounted controllers share a directory).
The `set_*` functions write limits, the `read_*` functions fill a CgroupStats from a
directory, so they also run on the recorded trees in tests/data/cgroupfs/v1/.
"""
import os
import time

from ctrkernel.errors import NotFound
from ctrkernel.runtime.cgroups import parse
from ctrkernel.runtime.cgroups.base import (GROUP_PARENT, Cgroup, CgroupError, CgroupManager,
                                            check_id, exited, kill_all, make_group, read,
                                            remove_dir, remove_parent_if_empty, write)
from ctrkernel.runtime.cgroups.resources import Resources
from ctrkernel.runtime.cgroups.stats import CgroupStats

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "blkio")
REQUIRED = ("memory", "pids")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _exists(directory, name):
    return os.path.exists(os.path.join(directory, name))


def _read(directory, name, default=None):
    try:
        return read(os.path.join(directory, name))
    except OSError:
        return default


# ---- limits ---------------------------------------------------------------------------------
def set_memory(directory, resources, notes):
    """memory.limit_in_bytes and memory.memsw.limit_in_bytes (memory + swap).

    The kernel refuses a memsw limit below the memory limit at every moment, so the order of
    the two writes depends on whether the limits grow or shrink (as runc does)."""
    memory = resources.memory if resources.memory is not None else -1
    memsw = resources.effective_memory_swap if resources.memory is not None else -1
    limit_file = os.path.join(directory, "memory.limit_in_bytes")
    memsw_file = os.path.join(directory, "memory.memsw.limit_in_bytes")
    if not os.path.exists(memsw_file):
        if resources.memory is not None:
            notes.append("swap accounting is off in this kernel (memory.memsw.* absent): the "
                         "memory limit does not cover swap; boot with swapaccount=1")
        write(limit_file, memory)
        return
    current = parse.value(read(limit_file))          # None: unlimited now
    if memsw == -1 or (current is not None and current < memsw):
        write(memsw_file, memsw)
        write(limit_file, memory)
    else:
        write(limit_file, memory)
        write(memsw_file, memsw)


def set_cpu(directory, resources, notes):
    """cpu.cfs_period_us then cpu.cfs_quota_us (the other order if the kernel refuses)."""
    quota, period = resources.cfs()
    period_file = os.path.join(directory, "cpu.cfs_period_us")
    quota_file = os.path.join(directory, "cpu.cfs_quota_us")
    try:
        write(period_file, period)
        write(quota_file, quota)
    except CgroupError:
        write(quota_file, quota)
        write(period_file, period)


def set_pids(directory, resources, notes):
    limit = resources.effective_pids_limit
    write(os.path.join(directory, "pids.max"), limit if limit else "max")


SETTERS = {"memory": set_memory, "cpu": set_cpu, "pids": set_pids}


# ---- statistics -----------------------------------------------------------------------------
def read_memory(directory, s):
    s.memory_usage = parse.value(_read(directory, "memory.usage_in_bytes", "0"))
    s.memory_limit = parse.value(_read(directory, "memory.limit_in_bytes", "max"))
    s.memory_max_usage = parse.value(_read(directory, "memory.max_usage_in_bytes", "0"))
    s.memory_failcnt = parse.value(_read(directory, "memory.failcnt", "0"))
    s.memory_stat = parse.flat_keyed(_read(directory, "memory.stat", ""))
    s.oom_kills = parse.flat_keyed(_read(directory, "memory.oom_control", "")).get("oom_kill", 0)
    memsw_usage = _read(directory, "memory.memsw.usage_in_bytes")
    if memsw_usage is not None and s.memory_usage is not None:
        s.swap_usage = max(0, parse.value(memsw_usage) - s.memory_usage)
        memsw_limit = parse.value(_read(directory, "memory.memsw.limit_in_bytes", "max"))
        if memsw_limit is not None and s.memory_limit is not None:
            s.swap_limit = memsw_limit - s.memory_limit


def read_cpuacct(directory, s):
    s.cpu_usage_ns = parse.value(_read(directory, "cpuacct.usage", "0"))
    user, system = _read(directory, "cpuacct.usage_user"), _read(directory, "cpuacct.usage_sys")
    if user is not None and system is not None:
        s.cpu_user_ns, s.cpu_system_ns = int(user), int(system)
    else:                                    # older kernels: USER_HZ ticks in cpuacct.stat
        ticks = parse.flat_keyed(_read(directory, "cpuacct.stat", ""))
        s.cpu_user_ns = ticks.get("user", 0) * 1_000_000_000 // CLK_TCK
        s.cpu_system_ns = ticks.get("system", 0) * 1_000_000_000 // CLK_TCK
    s.cpu_percpu_ns = parse.int_list(_read(directory, "cpuacct.usage_percpu", ""))


def read_cpu(directory, s):
    stat = parse.flat_keyed(_read(directory, "cpu.stat", ""))
    s.cpu_periods = stat.get("nr_periods")
    s.cpu_throttled_periods = stat.get("nr_throttled")
    s.cpu_throttled_ns = stat.get("throttled_time")
    quota = _read(directory, "cpu.cfs_quota_us")
    if quota is not None:
        s.cpu_quota_us = parse.value(quota)
        s.cpu_period_us = parse.value(_read(directory, "cpu.cfs_period_us", "100000"))


def read_pids(directory, s):
    s.pids_current = parse.value(_read(directory, "pids.current", "0"))
    s.pids_limit = parse.value(_read(directory, "pids.max", "max"))
    s.pids = parse.int_list(_read(directory, "cgroup.procs", ""))


def read_blkio(directory, s):
    # CFQ's files where the scheduler has them, else the throttle layer's (always present), as
    # the Docker daemon reads them.
    for name in ("blkio.io_service_bytes_recursive", "blkio.throttle.io_service_bytes_recursive",
                 "blkio.throttle.io_service_bytes"):
        text = _read(directory, name)
        if text is not None:
            s.blkio_devices = parse.v1_blkio(text)
            break
    s.blkio_read_bytes, s.blkio_write_bytes = parse.blkio_totals(s.blkio_devices)


READERS = {"memory": read_memory, "cpuacct": read_cpuacct, "cpu": read_cpu, "pids": read_pids,
           "blkio": read_blkio}


def read_stats(dirs):
    """A CgroupStats from {controller: directory} (live groups or recorded trees)."""
    s = CgroupStats(source="cgroup v1")
    for controller, reader in READERS.items():
        if controller in dirs:
            reader(dirs[controller], s)
    return s


def read_resources(dirs):
    """The limits a group has now, read back from its files (for `open` by another process)."""
    fields = {}
    memory_dir = dirs.get("memory")
    if memory_dir:
        fields["memory"] = parse.value(_read(memory_dir, "memory.limit_in_bytes", "max"))
        memsw = _read(memory_dir, "memory.memsw.limit_in_bytes")
        if fields["memory"] is not None and memsw is not None:
            memsw = parse.value(memsw)
            fields["memory_swap"] = -1 if memsw is None else memsw
    if dirs.get("cpu"):
        quota = parse.value(_read(dirs["cpu"], "cpu.cfs_quota_us", "-1"))
        if quota is not None:
            fields["cpu_quota"] = quota
            fields["cpu_period"] = parse.value(_read(dirs["cpu"], "cpu.cfs_period_us", "100000"))
    if dirs.get("pids"):
        fields["pids_limit"] = parse.value(_read(dirs["pids"], "pids.max", "max"))
    try:
        return Resources(**fields)
    except Exception:           # limits set by hand outside ctrkernel's rules
        return Resources()


# ---- the group ------------------------------------------------------------------------------
class V1Cgroup(Cgroup):
    driver = "v1"
    enforces = True

    def __init__(self, container_id, resources, dirs):
        super().__init__(container_id, resources)
        self.dirs = dirs                      # {controller: directory}
        self.path = dirs.get("memory")        # the one path to show

    def _unique_dirs(self):
        return sorted(set(self.dirs.values()))

    def apply(self, resources):
        for controller, setter in SETTERS.items():
            if controller in self.dirs:
                setter(self.dirs[controller], resources, self.notes)
            elif controller == "cpu" and (resources.nano_cpus or resources.cpu_quota):
                self.notes.append("the cpu controller is not mounted: no CPU limit")

    def add_process(self, pid):
        for directory in self._unique_dirs():
            try:
                write(os.path.join(directory, "cgroup.procs"), pid)
            except CgroupError:
                # A process that has already exited (a command that was not found, `true`)
                # cannot be moved and needs no limit: that is not an error.
                if exited(pid):
                    return
                raise

    def update(self, resources):
        merged = self.resources.merged(resources)
        self.apply(merged)
        self.resources = merged

    def freeze(self):
        directory = self.dirs.get("freezer")
        if not directory:
            raise CgroupError("the freezer controller is not mounted: cannot pause")
        # Freezing can stall on a task in an uninterruptible sleep; re-writing FROZEN retries.
        for _ in range(1000):
            write(os.path.join(directory, "freezer.state"), "FROZEN")
            if read(os.path.join(directory, "freezer.state")).strip() == "FROZEN":
                return
            time.sleep(0.01)
        write(os.path.join(directory, "freezer.state"), "THAWED")
        raise CgroupError(f"could not freeze {directory}: a task would not stop")

    def thaw(self):
        directory = self.dirs.get("freezer")
        if directory:
            write(os.path.join(directory, "freezer.state"), "THAWED")

    def frozen(self):
        directory = self.dirs.get("freezer")
        return bool(directory) and _read(directory, "freezer.state", "").strip() != "THAWED"

    def pids(self):
        found = set()
        for directory in self._unique_dirs():
            found.update(parse.int_list(_read(directory, "cgroup.procs", "")))
        return sorted(found)

    def stats(self):
        return read_stats(self.dirs)

    def oom_killed(self):
        text = _read(self.dirs["memory"], "memory.oom_control", "")
        return parse.flat_keyed(text).get("oom_kill", 0) > 0

    def destroy(self):
        if not any(os.path.isdir(d) for d in self._unique_dirs()):
            return
        kill_all(self.pids)
        self.thaw()                           # frozen tasks die only once thawed
        if not kill_all(self.pids):
            raise CgroupError(f"processes of container {self.id} survive SIGKILL: {self.pids()}")
        for directory in self._unique_dirs():
            remove_dir(directory)
            remove_parent_if_empty(os.path.dirname(directory))


class V1Manager(CgroupManager):
    driver = "v1"
    enforces = True
    why_not = ""

    def __init__(self, mounts):
        self.mounts = {c: m for c, m in mounts.items() if c in CONTROLLERS}
        missing = [c for c in REQUIRED if c not in self.mounts]
        if missing:
            raise CgroupError(f"cgroup v1 without the {', '.join(missing)} controller")

    def _dirs(self, container_id):
        return {c: os.path.join(m, GROUP_PARENT, container_id) for c, m in self.mounts.items()}

    def create(self, container_id, resources=None):
        container_id = check_id(container_id)
        resources = resources or Resources()
        dirs = self._dirs(container_id)
        cg = V1Cgroup(container_id, resources, dirs)
        try:
            for directory in sorted(set(dirs.values())):
                make_group(os.path.dirname(directory), os.path.basename(directory))
            cg.apply(resources)
        except Exception:
            cg.destroy()
            raise
        return cg

    def open(self, container_id):
        dirs = self._dirs(check_id(container_id))
        if not os.path.isdir(dirs["memory"]):
            raise NotFound(f"no cgroup for container {container_id}")
        return V1Cgroup(container_id, read_resources(dirs), dirs)

    def list_ids(self):
        ids = set()
        for mount in self.mounts.values():
            try:
                ids.update(e.name for e in os.scandir(os.path.join(mount, GROUP_PARENT))
                           if e.is_dir())
            except FileNotFoundError:
                pass
        return sorted(ids)
