"""Cheap repeated reads of cgroup and /proc files, for sampling many targets several times a
second (the dashboard, `ctrkernel stats`).

Opening a file costs more than reading it: a path walk through kernfs, a new file object. The
kernel regenerates a cgroup file (a seq_file) and /proc/stat on every read from offset 0, so we
open each file once and `pread(fd, n, 0)` it each round. An open descriptor does not keep a
cgroup alive: once the group is removed, reads fail (ENODEV) and we forget the descriptor.

`read_v1` / `read_v2` read only what the dashboard shows (memory with memory.stat, CPU usage and
throttling with the quota, pids, OOM kills, block I/O), through the parsers of runtime/cgroups/parse.py; the complete
`Cgroup.stats()` (max usage, swap, per-CPU times...) remains what `stats()` in Docker's shape
uses.
"""
import os

from ctrkernel.metrics.sample import CLK_TCK, NS
from ctrkernel.runtime.cgroups import parse
from ctrkernel.runtime.cgroups.stats import CgroupStats


class FileReader:
    def __init__(self):
        self._fds = {}

    def read(self, path, default=None):
        fd = self._fds.get(path)
        try:
            if fd is None:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                self._fds[path] = fd
            return os.pread(fd, 65536, 0).decode()
        except OSError:
            self.forget(path)
            return default

    def forget(self, path):
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self):
        for path in list(self._fds):
            self.forget(path)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- the host ------------------------------------------------------------------------
    def system_cpu_ns(self):
        """Docker's system_cpu_usage (see sample.system_cpu_ns), from a kept-open /proc/stat."""
        first = self.read("/proc/stat", "cpu 0").split("\n", 1)[0].split()
        return sum(int(x) for x in first[1:8]) * NS // CLK_TCK


def _join(directory, name):
    return directory + "/" + name


def read_v1(reader, dirs):
    """A CgroupStats with the dashboard's fields from v1 directories {controller: dir}."""
    s = CgroupStats(source="cgroup v1")
    d = dirs.get("memory")
    if d:
        s.memory_usage = parse.value(reader.read(_join(d, "memory.usage_in_bytes"), "0"))
        s.memory_limit = parse.value(reader.read(_join(d, "memory.limit_in_bytes"), "max"))
        s.memory_stat = parse.flat_keyed(reader.read(_join(d, "memory.stat"), ""))
        s.oom_kills = parse.flat_keyed(
            reader.read(_join(d, "memory.oom_control"), "")).get("oom_kill", 0)
    d = dirs.get("cpuacct")
    if d:
        s.cpu_usage_ns = parse.value(reader.read(_join(d, "cpuacct.usage"), "0"))
    d = dirs.get("cpu")
    if d:
        stat = parse.flat_keyed(reader.read(_join(d, "cpu.stat"), ""))
        s.cpu_periods, s.cpu_throttled_periods = stat.get("nr_periods"), stat.get("nr_throttled")
        s.cpu_throttled_ns = stat.get("throttled_time")
        s.cpu_quota_us = parse.value(reader.read(_join(d, "cpu.cfs_quota_us"), "-1"))
        s.cpu_period_us = parse.value(reader.read(_join(d, "cpu.cfs_period_us"), "100000"))
    d = dirs.get("pids")
    if d:
        s.pids_current = parse.value(reader.read(_join(d, "pids.current"), "0"))
        s.pids_limit = parse.value(reader.read(_join(d, "pids.max"), "max"))
    d = dirs.get("blkio")
    if d:
        s.blkio_devices = parse.v1_blkio(
            reader.read(_join(d, "blkio.throttle.io_service_bytes_recursive"), ""))
        s.blkio_read_bytes, s.blkio_write_bytes = parse.blkio_totals(s.blkio_devices)
    return s


def read_v2(reader, directory):
    """The same from one cgroup v2 directory."""
    s = CgroupStats(source="cgroup v2")
    current = reader.read(_join(directory, "memory.current"))
    s.memory_usage = parse.value(current) if current else None
    s.memory_limit = parse.value(reader.read(_join(directory, "memory.max"), "max"))
    s.memory_stat = parse.flat_keyed(reader.read(_join(directory, "memory.stat"), ""))
    s.oom_kills = parse.flat_keyed(
        reader.read(_join(directory, "memory.events"), "")).get("oom_kill", 0)
    cpu = parse.flat_keyed(reader.read(_join(directory, "cpu.stat"), ""))
    if "usage_usec" in cpu:
        s.cpu_usage_ns = cpu["usage_usec"] * 1000
        s.cpu_user_ns = cpu.get("user_usec", 0) * 1000
        s.cpu_system_ns = cpu.get("system_usec", 0) * 1000
        s.cpu_periods, s.cpu_throttled_periods = cpu.get("nr_periods"), cpu.get("nr_throttled")
        if "throttled_usec" in cpu:
            s.cpu_throttled_ns = cpu["throttled_usec"] * 1000
    quota = reader.read(_join(directory, "cpu.max"))
    if quota:
        s.cpu_quota_us, s.cpu_period_us = parse.cpu_max(quota)
    pids = reader.read(_join(directory, "pids.current"))
    if pids:
        s.pids_current = parse.value(pids)
        s.pids_limit = parse.value(reader.read(_join(directory, "pids.max"), "max"))
    s.blkio_devices = parse.v2_io_as_blkio(
        parse.nested_keyed(reader.read(_join(directory, "io.stat"), "")))
    s.blkio_read_bytes, s.blkio_write_bytes = parse.blkio_totals(s.blkio_devices)
    return s


def read_cgroup(reader, cgroup):
    """Fast stats of one of our Cgroup objects (v1: .dirs; v2: .path), else its own stats()."""
    dirs = getattr(cgroup, "dirs", None)
    if cgroup.driver == "v1" and dirs:
        return read_v1(reader, dirs)
    path = getattr(cgroup, "path", None)
    if cgroup.driver == "v2" and path:
        return read_v2(reader, str(path))
    return cgroup.stats()
