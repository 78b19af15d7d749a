"""One sample of a container's resource use, the same shape for cgroup v1, v2 and /proc.

Units are in the field names' comments and never converted twice: bytes, nanoseconds, counts.
`None` means "this source cannot tell" (v1 has no memory.peak equivalent missing, /proc has no
throttling...), never zero. The metrics layer turns these into Docker's stats shape.
"""
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class CgroupStats:
    source: str                             # "cgroup v1", "cgroup v2" or "proc" (no cgroup)
    time: float = field(default_factory=time.time)   # seconds since the epoch, when read
    # memory ---------------------------------------------------------------------------------
    memory_usage: Optional[int] = None      # bytes charged now (memory.usage_in_bytes / .current)
    memory_limit: Optional[int] = None      # bytes; None = unlimited
    memory_max_usage: Optional[int] = None  # bytes, high-water mark (max_usage_in_bytes / .peak)
    memory_stat: dict = field(default_factory=dict)   # memory.stat as read: mostly bytes, some
                                                      # counters (pgfault...); keys as the kernel's
    memory_failcnt: Optional[int] = None    # times the limit was hit (v1 only)
    swap_usage: Optional[int] = None        # bytes of swap used (v1: memsw - usage)
    swap_limit: Optional[int] = None        # bytes of swap allowed (not memory+swap); None = unlimited
    oom_kills: int = 0                      # processes the OOM killer killed in this group
    # cpu ------------------------------------------------------------------------------------
    cpu_usage_ns: Optional[int] = None      # total CPU time used, nanoseconds
    cpu_user_ns: Optional[int] = None       # in user mode, nanoseconds
    cpu_system_ns: Optional[int] = None     # in kernel mode, nanoseconds
    cpu_percpu_ns: list = field(default_factory=list)  # per CPU, nanoseconds (v1 only)
    cpu_periods: Optional[int] = None       # CFS periods elapsed with a quota set
    cpu_throttled_periods: Optional[int] = None  # periods in which the group was throttled
    cpu_throttled_ns: Optional[int] = None  # total time throttled, nanoseconds
    cpu_quota_us: Optional[int] = None      # quota per period, microseconds; None = unlimited
    cpu_period_us: Optional[int] = None     # period, microseconds
    # pids -----------------------------------------------------------------------------------
    pids_current: Optional[int] = None      # processes + threads now
    pids_limit: Optional[int] = None        # None = unlimited
    pids: list = field(default_factory=list)  # the process ids in the group
    # block I/O ------------------------------------------------------------------------------
    blkio_read_bytes: Optional[int] = None  # bytes read from block devices
    blkio_write_bytes: Optional[int] = None  # bytes written to block devices
    blkio_devices: list = field(default_factory=list)  # Docker's io_service_bytes_recursive
                                                        # entries: {major, minor, op, value}

    def to_dict(self):
        return dataclasses.asdict(self)
