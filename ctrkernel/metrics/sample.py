"""One reading of one target, and the derived point a chart or table shows.

A `Sample` keeps the raw counters (`CgroupStats`: bytes, nanoseconds, counts) plus
the two host counters Docker's CPU percentage needs (`system_cpu_ns`, `online_cpus`), the time it
was read and the target's status. A `Point` is what two consecutive samples mean to a reader:
memory in use, CPU percent, process count, each beside its limit. Units are in `UNITS`, so a
figure or a table never guesses them.
"""
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from ctrkernel.runtime.cgroups.stats import CgroupStats

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = 1_000_000_000

# Units of every Point field (and of the CgroupStats fields they come from).
UNITS = {
    "t": "s since the recording started", "time": "s since the epoch",
    "memory_used": "bytes", "memory_usage": "bytes", "memory_limit": "bytes",
    "memory_max_usage": "bytes", "cpu_percent": "% of one CPU",
    "cpu_limit_percent": "% of one CPU", "cpu_throttled_periods": "count",
    "pids": "count", "pids_limit": "count", "blkio_read_bytes": "bytes",
    "blkio_write_bytes": "bytes", "oom_kills": "count",
}


def system_cpu_ns():
    """The host's total CPU time in nanoseconds, as Docker's `system_cpu_usage`: the first
    seven fields of /proc/stat's "cpu" line (user ... softirq), in clock ticks, scaled."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    ticks = sum(int(x) for x in fields[1:8])
    return ticks * NS // CLK_TCK


def online_cpus():
    return os.sysconf("SC_NPROCESSORS_ONLN")


@dataclass
class Sample:
    target: str                     # the name shown for what was measured
    stats: CgroupStats              # raw counters; stats.source says where they came from
    system_cpu_ns: int              # host CPU time, ns (Docker's system_cpu_usage)
    online_cpus: int                # CPUs online on the host
    status: str = "running"         # "running", "exited (137, OOM killed)", "gone"...
    monotonic: float = field(default_factory=time.monotonic)   # s, for intervals

    @property
    def time(self):
        return self.stats.time

    @property
    def units(self):
        return UNITS


@dataclass
class Point:
    t: float                                 # s since the recording started
    time: float                              # s since the epoch
    status: str
    memory_used: Optional[int] = None        # bytes, as `docker stats` (usage - inactive_file)
    memory_limit: Optional[int] = None       # bytes; None = unlimited
    cpu_percent: Optional[float] = None      # % of one CPU over the last interval
    cpu_limit_percent: Optional[float] = None  # the quota as % of one CPU; None = unlimited
    cpu_throttled_periods: Optional[int] = None  # periods throttled since the last sample
    pids: Optional[int] = None
    pids_limit: Optional[int] = None
    oom_kills: int = 0
    blkio_read_bytes: Optional[int] = None
    blkio_write_bytes: Optional[int] = None

    def to_dict(self):
        return asdict(self)


def memory_used(stats):
    """Memory in use as the docker CLI shows it: usage minus inactive file cache
    (`total_inactive_file` on cgroup v1, `inactive_file` on v2), never below zero."""
    usage = stats.memory_usage
    if usage is None:
        return None
    stat = stats.memory_stat or {}
    inactive = stat.get("total_inactive_file", stat.get("inactive_file"))
    if inactive is not None and inactive < usage:
        return usage - inactive
    return usage


def cpu_percent(previous, current):
    """Docker's CPU %: container CPU delta / host CPU delta x online CPUs x 100 (so 100 = one
    CPU fully used). None for the first sample or when the counters cannot tell."""
    if previous is None or current.stats.cpu_usage_ns is None \
            or previous.stats.cpu_usage_ns is None:
        return None
    cpu_delta = current.stats.cpu_usage_ns - previous.stats.cpu_usage_ns
    system_delta = current.system_cpu_ns - previous.system_cpu_ns
    if system_delta <= 0 or cpu_delta < 0:
        return 0.0 if cpu_delta == 0 else None
    return cpu_delta / system_delta * current.online_cpus * 100.0


def point(previous, current, t0):
    s = current.stats
    quota = None
    if s.cpu_quota_us is not None and s.cpu_period_us:
        quota = s.cpu_quota_us / s.cpu_period_us * 100.0
    throttled = None
    if previous is not None and s.cpu_throttled_periods is not None \
            and previous.stats.cpu_throttled_periods is not None:
        throttled = s.cpu_throttled_periods - previous.stats.cpu_throttled_periods
    return Point(t=current.monotonic - t0, time=current.time, status=current.status,
                 memory_used=memory_used(s), memory_limit=s.memory_limit,
                 cpu_percent=cpu_percent(previous, current), cpu_limit_percent=quota,
                 cpu_throttled_periods=throttled, pids=s.pids_current, pids_limit=s.pids_limit,
                 oom_kills=s.oom_kills or 0, blkio_read_bytes=s.blkio_read_bytes,
                 blkio_write_bytes=s.blkio_write_bytes)
