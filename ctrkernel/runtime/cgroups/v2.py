"""cgroup v2: one directory per container in the unified hierarchy (runc's fs2/).

A container's group is `<base>/ctrkernel/<id>`, where `<base>` is the highest group on the way
from the mount's root to our own group that we may write to: the root itself when we are root
on the host (as Docker's cgroupfs driver puts `/docker/<id>` there), else the group a
systemd-style delegation gave us. Two rules of v2 shape the code (kernel cgroup-v2.rst):

- A controller works in a group only if the parent enabled it in `cgroup.subtree_control`, and
  a parent can enable it only if *its* parent did. So on the way down from the mount's root we
  add `+memory +cpu +pids +io` where a group has the controller but has not enabled it yet.
- "No internal processes": a non-root group that enables controllers for its children must not
  hold processes itself. `ctrkernel/` only ever holds container groups, never a process.

Controllers that cannot be enabled (not compiled in, not delegated to us, or bound to a v1
hierarchy on a hybrid host) are not an error: the group is made with what exists, and every
limit that cannot be enforced is written, in words, to `Cgroup.notes`.

The `set_*` functions write limits and `read_stats` fills a CgroupStats from a directory, so it
also runs on the recorded tree in tests/data/cgroupfs/v2/.
"""
import os
import time

from ctrkernel.errors import NotFound
from ctrkernel.runtime.cgroups import parse
from ctrkernel.runtime.cgroups.base import (GROUP_PARENT, Cgroup, CgroupError, CgroupManager,
                                            check_id, exited, kill_all, read, remove_dir,
                                            remove_parent_if_empty, write)
from ctrkernel.runtime.cgroups.resources import Resources
from ctrkernel.runtime.cgroups.stats import CgroupStats

# What we enable for containers; io has no limit in Resources yet but gives block I/O stats.
CONTROLLERS = ("memory", "cpu", "pids", "io")
FREEZE_TIMEOUT = 10.0       # seconds for every task to reach the frozen state


def _read(directory, name, default=None):
    try:
        return read(os.path.join(directory, name))
    except OSError:
        return default


def _exists(directory, name):
    return os.path.exists(os.path.join(directory, name))


# ---- limits ---------------------------------------------------------------------------------
def swap_max(resources):
    """memory.swap.max for these limits: swap alone, where Docker's memory_swap is memory + swap.

    "max" when there is no memory limit or swap is unlimited (-1); 0 when memory_swap equals
    memory, which is ctrkernel's default, so that a limit cannot be escaped through swap."""
    memsw = resources.effective_memory_swap
    if memsw is None or memsw == -1:
        return "max"
    return memsw - resources.memory


def _missing(controller, refused, limit):
    why = refused.get(controller, "not enabled for this group")
    return f"the {controller} controller could not be enabled ({why}): no {limit}"


def set_memory(directory, resources, notes, refused):
    """memory.max and memory.swap.max. Unlike v1's memsw, the two are independent files, so the
    order of the writes does not matter."""
    if not _exists(directory, "memory.max"):
        if resources.memory is not None:
            notes.append(_missing("memory", refused, "memory limit"))
        return
    write(os.path.join(directory, "memory.max"),
          resources.memory if resources.memory is not None else "max")
    swap = swap_max(resources)
    if _exists(directory, "memory.swap.max"):
        write(os.path.join(directory, "memory.swap.max"), swap)
    elif swap != "max":
        notes.append("swap accounting is off in this kernel (memory.swap.max absent): the "
                     "memory limit does not cover swap; boot with swapaccount=1")


def cpu_max(resources):
    """The "<quota> <period>" line of cpu.max ("max 100000": no limit)."""
    quota, period = resources.cfs()
    return f"{'max' if quota == -1 else quota} {period}"


def set_cpu(directory, resources, notes, refused):
    limited = bool(resources.nano_cpus) or resources.cpu_quota not in (None, 0, -1)
    if not _exists(directory, "cpu.max"):
        if limited:
            notes.append(_missing("cpu", refused, "CPU limit"))
        return
    write(os.path.join(directory, "cpu.max"), cpu_max(resources))


def set_pids(directory, resources, notes, refused):
    limit = resources.effective_pids_limit
    if not _exists(directory, "pids.max"):
        if limit:
            notes.append(_missing("pids", refused, "process limit"))
        return
    write(os.path.join(directory, "pids.max"), limit if limit else "max")


SETTERS = (set_memory, set_cpu, set_pids)


# ---- statistics -----------------------------------------------------------------------------
def read_stats(directory):
    """A CgroupStats from one v2 group directory (live, or a recorded tree).

    Fields v2 does not have (v1's failcnt, per-CPU usage) stay None/empty; units are converted
    once here: v2 gives CPU times in microseconds, CgroupStats wants nanoseconds."""
    s = CgroupStats(source="cgroup v2")
    current = _read(directory, "memory.current")
    if current is not None:
        s.memory_usage = parse.value(current)
        s.memory_limit = parse.value(_read(directory, "memory.max", "max"))
        peak = _read(directory, "memory.peak")           # kernel 5.19 and later
        s.memory_max_usage = parse.value(peak) if peak is not None else None
        s.memory_stat = parse.flat_keyed(_read(directory, "memory.stat", ""))
        s.oom_kills = parse.flat_keyed(_read(directory, "memory.events", "")).get("oom_kill", 0)
        swap = _read(directory, "memory.swap.current")
        if swap is not None:
            s.swap_usage = parse.value(swap)
            s.swap_limit = parse.value(_read(directory, "memory.swap.max", "max"))
    # cpu.stat's usage lines are there without the cpu controller (the "core" accounting);
    # the throttling lines only with it.
    cpu = parse.flat_keyed(_read(directory, "cpu.stat", ""))
    if "usage_usec" in cpu:
        s.cpu_usage_ns = cpu["usage_usec"] * 1000
        s.cpu_user_ns = cpu.get("user_usec", 0) * 1000
        s.cpu_system_ns = cpu.get("system_usec", 0) * 1000
    if "nr_periods" in cpu:
        s.cpu_periods, s.cpu_throttled_periods = cpu["nr_periods"], cpu.get("nr_throttled")
        if "throttled_usec" in cpu:
            s.cpu_throttled_ns = cpu["throttled_usec"] * 1000
    quota = _read(directory, "cpu.max")
    if quota is not None:
        s.cpu_quota_us, s.cpu_period_us = parse.cpu_max(quota)
    pids = _read(directory, "pids.current")
    if pids is not None:
        s.pids_current = parse.value(pids)
        s.pids_limit = parse.value(_read(directory, "pids.max", "max"))
    s.pids = parse.int_list(_read(directory, "cgroup.procs", ""))
    io = _read(directory, "io.stat")
    if io is not None:
        s.blkio_devices = parse.v2_io_as_blkio(parse.nested_keyed(io))
        s.blkio_read_bytes, s.blkio_write_bytes = parse.blkio_totals(s.blkio_devices)
    return s


def read_resources(directory):
    """The limits a group has now, read back from its files (for `open` by another process)."""
    fields = {}
    memory = _read(directory, "memory.max")
    if memory is not None:
        fields["memory"] = parse.value(memory)
        swap = _read(directory, "memory.swap.max")
        if fields["memory"] is not None and swap is not None:
            swap = parse.value(swap)
            fields["memory_swap"] = -1 if swap is None else fields["memory"] + swap
    cpu = _read(directory, "cpu.max")
    if cpu is not None:
        quota, period = parse.cpu_max(cpu)
        if quota is not None:
            fields["cpu_quota"], fields["cpu_period"] = quota, period
    pids = _read(directory, "pids.max")
    if pids is not None:
        fields["pids_limit"] = parse.value(pids)
    try:
        return Resources(**fields)
    except Exception:           # limits set by hand outside ctrkernel's rules
        return Resources()


def has_kill(directory):
    """True if the kernel gives this group cgroup.kill (Linux 5.14). The one place destroy
    decides between cgroup.kill and the kill-by-pid fallback; tests/cgroup_v2_guest.py replaces
    it to run the fallback on a kernel that has cgroup.kill."""
    return _exists(directory, "cgroup.kill")


def events(directory):
    """cgroup.events as {"populated": 0|1, "frozen": 0|1}."""
    return parse.flat_keyed(_read(directory, "cgroup.events", ""))


# ---- enabling controllers -------------------------------------------------------------------
def enable_controllers(chain, wanted=CONTROLLERS):
    """Enable `wanted` in cgroup.subtree_control of each group of `chain` (top-down), where the
    group has the controller and has not enabled it yet. Returns {controller: why not} for the
    ones some group could not pass down; the caller reads the result from the new group."""
    refused = {}
    for group in chain:
        available = set(_read(group, "cgroup.controllers", "").split())
        enabled = set(_read(group, "cgroup.subtree_control", "").split())
        for controller in wanted:
            if controller in enabled or controller in refused:
                continue
            if controller not in available:
                refused[controller] = f"not available in {group}"
                continue
            try:
                write(os.path.join(group, "cgroup.subtree_control"), f"+{controller}")
            except CgroupError as e:
                # EBUSY: the group holds processes ("no internal processes"); EACCES: the
                # group was not delegated to us.
                refused[controller] = str(e)
    return refused


def ancestors(mount, group):
    """[mount, mount/a, mount/a/b] for group "/a/b": the groups from the root down to ours."""
    chain, path = [mount], mount
    for part in [p for p in group.split("/") if p]:
        path = os.path.join(path, part)
        chain.append(path)
    return chain


# ---- the group ------------------------------------------------------------------------------
class V2Cgroup(Cgroup):
    driver = "v2"
    enforces = True

    def __init__(self, container_id, resources, path):
        super().__init__(container_id, resources)
        self.path = path
        self.dirs = {"": path}                # the unified hierarchy's one directory
        self.refused = {}                     # {controller: why it could not be enabled}

    def apply(self, resources):
        notes = []
        for setter in SETTERS:
            setter(self.path, resources, notes, self.refused)
        self.notes = notes                    # what the latest limits could not get

    def add_process(self, pid):
        try:
            write(os.path.join(self.path, "cgroup.procs"), pid)
        except CgroupError:
            # A process that has already exited cannot be moved and needs no limit.
            if not exited(pid):
                raise

    def update(self, resources):
        merged = self.resources.merged(resources)
        self.apply(merged)
        self.resources = merged

    def freeze(self):
        """Write cgroup.freeze, then wait for cgroup.events to say every task is frozen: the
        write only *starts* freezing (a task in the kernel stops at its next return to user
        space)."""
        if not _exists(self.path, "cgroup.freeze"):
            raise CgroupError("this kernel has no cgroup v2 freezer (cgroup.freeze, Linux 5.2): "
                              "cannot pause")
        write(os.path.join(self.path, "cgroup.freeze"), 1)
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while events(self.path).get("frozen") != 1:
            if time.monotonic() > deadline:
                write(os.path.join(self.path, "cgroup.freeze"), 0)
                raise CgroupError(f"could not freeze {self.path}: a task would not stop")
            time.sleep(0.01)

    def thaw(self):
        if _exists(self.path, "cgroup.freeze"):
            write(os.path.join(self.path, "cgroup.freeze"), 0)

    def frozen(self):
        # What was asked (cgroup.freeze), like v1's state != THAWED, which includes FREEZING.
        return _read(self.path, "cgroup.freeze", "0").strip() == "1"

    def _groups(self):
        """This group and any groups a container made below it, deepest first."""
        found = []
        for root, _, _ in os.walk(self.path, topdown=False):
            found.append(root)
        return found

    def pids(self):
        found = set()
        for group in self._groups():
            found.update(parse.int_list(_read(group, "cgroup.procs", "")))
        return sorted(found)

    def stats(self):
        return read_stats(self.path)

    def oom_killed(self):
        text = _read(self.path, "memory.events", "")
        return parse.flat_keyed(text).get("oom_kill", 0) > 0

    def destroy(self):
        if not os.path.isdir(self.path):
            return
        if has_kill(self.path):
            # Linux 5.14: one write SIGKILLs the whole subtree, frozen tasks and new forks too.
            write(os.path.join(self.path, "cgroup.kill"), 1)
        else:
            # Before 5.14: SIGKILL each pid, in this group and the ones the container made below
            # it, until none is left. A frozen v2 task dies of SIGKILL without a thaw
            # (cgroup-v2.rst; measured by tests/cgroup_v2_guest.py), so we kill first, and no
            # task runs user code again; the thaw after it only matters for a kernel that held
            # killed tasks frozen (v1's freezer does), and then the second kill_all ends them.
            kill_all(self.pids)
            self.thaw()
        if not kill_all(self.pids):
            raise CgroupError(f"processes of container {self.id} survive SIGKILL: {self.pids()}")
        for group in self._groups():
            remove_dir(group)
        remove_parent_if_empty(os.path.dirname(self.path))


class V2Manager(CgroupManager):
    """Groups in the unified hierarchy mounted at `mount`; `group` is our own group in it (from
    /proc/self/cgroup's "0::" line), which bounds where a delegation lets us write."""

    driver = "v2"
    enforces = True
    why_not = ""

    def __init__(self, mount, group="/"):
        self.mount, self.group = mount, group or "/"
        self._base = None

    @property
    def base(self):
        """The highest group from the mount's root down to ours that we may write to."""
        if self._base is None:
            for candidate in ancestors(self.mount, self.group):
                if os.access(candidate, os.W_OK):
                    self._base = candidate
                    break
            else:
                raise CgroupError(f"no group under the cgroup v2 mount {self.mount} is writable "
                                  "by this user: cannot create groups")
        return self._base

    @property
    def parent(self):
        return os.path.join(self.base, GROUP_PARENT)

    def _path(self, container_id):
        return os.path.join(self.parent, container_id)

    def _make(self, container_id):
        """The parent (controllers enabled for its children) and the group; {controller: why}
        for those the chain refused. Retries if a concurrent destroy removed the then empty
        parent between our steps."""
        full = ancestors(self.mount, self.group)
        chain = full[:full.index(self.base) + 1]
        path = self._path(container_id)
        for _ in range(5):
            try:
                os.makedirs(self.parent, exist_ok=True)
            except OSError as e:
                raise CgroupError(f"cannot create cgroup {self.parent}: "
                                  f"{os.strerror(e.errno)}") from None
            refused = enable_controllers(chain + [self.parent])
            try:
                os.mkdir(path)
                return path, refused
            except FileExistsError:
                return path, refused
            except FileNotFoundError:
                continue
            except OSError as e:
                raise CgroupError(f"cannot create cgroup {path}: {os.strerror(e.errno)}") from None
        raise CgroupError(f"cannot create cgroup {path}: its parent keeps disappearing")

    def create(self, container_id, resources=None):
        container_id = check_id(container_id)
        resources = resources or Resources()
        cg = V2Cgroup(container_id, resources, self._path(container_id))
        try:
            _, refused = self._make(container_id)
            cg.refused = refused
            cg.apply(resources)
        except Exception:
            cg.destroy()
            raise
        return cg

    def open(self, container_id):
        path = self._path(check_id(container_id))
        if not os.path.isdir(path):
            raise NotFound(f"no cgroup for container {container_id}")
        return V2Cgroup(container_id, read_resources(path), path)

    def list_ids(self):
        try:
            return sorted(e.name for e in os.scandir(self.parent) if e.is_dir())
        except (FileNotFoundError, CgroupError):
            return []
