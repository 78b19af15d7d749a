"""The limits a container asks for (Docker's HostConfig resource fields), validated up front.

Impossible limits fail here, before any process or cgroup exists: a memory limit below what a
process can start in, swap below memory, negative values, more CPUs than the host has.

Conventions (Docker's, with one stricter default):
- `None` means "not set" (no limit) for every field.
- `memory_swap` is memory *plus* swap, as `--memory-swap`. -1 means unlimited swap. When it is not
  set and `memory` is, ctrkernel allows **no** swap (memory_swap = memory) so that a limit cannot
  be escaped through swap; Docker's default would allow as much swap as memory.
- `nano_cpus` is CPUs x 1e9 (`--cpus 0.5` -> 500_000_000); it becomes a CFS quota of
  nano_cpus * period / 1e9 microseconds per period (100 ms), exactly as Docker does. It cannot be
  combined with `cpu_quota`/`cpu_period`.
- `cpu_quota` and `cpu_period` are microseconds; quota -1 means unlimited.
- `pids_limit` is a number of processes (threads count too); 0 or -1 means unlimited.

Upper bounds (checked here so that an absurd value fails naming its flag, not in the kernel after
the cgroup exists): bytes and processes fit a signed 64-bit integer (what the kernel's and
Docker's int64 fields hold); the CPU period is at most 1 s (Docker's and the kernel's maximum);
the CPU quota fits an int64 as well (the kernel accepts quotas above the period: more than one
CPU).

`docker update` gives only some fields: `LimitUpdate` holds them, checked one by one; whether
they make sense together is checked once merged with the container's limits (`merged`).
"""
import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

from ctrkernel.errors import InvalidArgument
from ctrkernel.units import NANO, format_bytes, format_cpus, parse_bytes, parse_cpus, parse_int

# Docker refuses memory limits below 6 MiB ("Minimum memory limit allowed is 6MB"): below that
# even a shell is OOM-killed while starting, which looks like a mysterious failure.
MIN_MEMORY = 6 << 20
DEFAULT_CPU_PERIOD = 100_000       # microseconds, the kernel's and Docker's default
MIN_CPU_PERIOD, MAX_CPU_PERIOD = 1_000, 1_000_000
MIN_CPU_QUOTA = 1_000
INT64_MAX = (1 << 63) - 1          # the kernel's and Docker's fields are signed 64-bit


def host_cpus():
    """The CPUs this process may run on (what Docker's NumCPU counts)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Resources:
    memory: Optional[int] = None        # bytes
    memory_swap: Optional[int] = None   # bytes of memory + swap; -1 unlimited swap
    nano_cpus: Optional[int] = None     # CPUs x 1e9
    cpu_quota: Optional[int] = None     # microseconds per period; -1 unlimited
    cpu_period: Optional[int] = None    # microseconds
    pids_limit: Optional[int] = None    # processes (and threads)

    def __post_init__(self):
        self.validate()

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_docker(cls, mem_limit=None, memswap_limit=None, nano_cpus=None, cpu_quota=None,
                    cpu_period=None, pids_limit=None, cpus=None):
        """From docker-py's keyword names; sizes may be strings ("64m") or ints (bytes).

        Docker's "unset" values are accepted too, as numbers or as the command line's strings:
        0 for memory ("0", "0m"), memory+swap, cpus, nano_cpus, quota and period all mean "no
        limit"; pids_limit 0 stays 0, which means unlimited (`update` must be able to say it).
        `cpus` is the command line's `--cpus` ("0.5").
        """
        if cpus is not None:
            if nano_cpus is not None:
                raise InvalidArgument("give either cpus or nano_cpus, not both")
            nano_cpus = parse_cpus(cpus) or None
        # Parsed first, then 0 read as unset: `-m 0` is Docker's "no limit", not a limit
        # too small to start in (1k still is one, and is refused by validate()).
        memory = (parse_bytes(mem_limit, "memory limit") or None) if mem_limit not in (None, "") else None
        if memswap_limit in (None, ""):
            swap = None
        elif str(memswap_limit).strip() == "-1":
            swap = -1
        else:
            swap = parse_bytes(memswap_limit, "memory+swap limit") or None
        return cls(
            memory=memory,
            memory_swap=swap,
            nano_cpus=(parse_int(nano_cpus, "nano_cpus") or None) if nano_cpus is not None else None,
            cpu_quota=(parse_int(cpu_quota, "cpu quota") or None) if cpu_quota is not None else None,
            cpu_period=(parse_int(cpu_period, "cpu period") or None) if cpu_period is not None else None,
            pids_limit=parse_int(pids_limit, "pids limit") if pids_limit is not None else None,
        )

    @classmethod
    def from_host_config(cls, host_config):
        """From a Docker Engine API HostConfig dict (Memory, MemorySwap, NanoCpus, ...)."""
        h = host_config or {}
        return cls.from_docker(h.get("Memory"), h.get("MemorySwap"), h.get("NanoCpus"),
                               h.get("CpuQuota"), h.get("CpuPeriod"), h.get("PidsLimit"))

    def to_host_config(self):
        """Docker's HostConfig fields (0 = unset, as `docker inspect` shows them)."""
        return {"Memory": self.memory or 0, "MemorySwap": self.memory_swap or 0,
                "NanoCpus": self.nano_cpus or 0, "CpuQuota": self.cpu_quota or 0,
                "CpuPeriod": self.cpu_period or 0, "PidsLimit": self.pids_limit or 0}

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in fields})

    def merged(self, update):
        """These limits with every field `update` sets replacing ours (`docker update`).

        The result is checked as a whole (InvalidArgument if the combination is impossible)."""
        changes = {k: v for k, v in update.to_dict().items() if v is not None}
        if self.nano_cpus and "nano_cpus" not in changes:
            # As Docker: a period (or quota) alone would drop the --cpus limit without a word
            # (the period alone would even mean "no quota": unlimited CPU).
            for key, what in (("cpu_period", "CPU period"), ("cpu_quota", "CPU quota")):
                if changes.get(key) not in (None, 0):
                    raise InvalidArgument(
                        f"conflicting options: {what} cannot be updated as NanoCPUs has already "
                        "been set (the container was given --cpus; update --cpus instead)")
        if "nano_cpus" in changes:            # one way to say "CPU" replaces the other
            changes.setdefault("cpu_quota", None)
            changes.setdefault("cpu_period", None)
        elif "cpu_quota" in changes or "cpu_period" in changes:
            changes["nano_cpus"] = None
        if "memory" in changes and "memory_swap" not in changes and self.memory_swap not in (None, -1):
            # keep the swap allowance (memory_swap - memory) the container had
            changes["memory_swap"] = changes["memory"] + max(0, self.memory_swap - (self.memory or 0))
        return dataclasses.replace(self, **changes)

    # ---- what the kernel gets -----------------------------------------------------------------
    @property
    def is_empty(self):
        return all(v is None for v in self.to_dict().values())

    @property
    def effective_memory_swap(self):
        """Memory + swap to write to the kernel: None (no limit), -1 (unlimited swap) or bytes."""
        if self.memory is None:
            return None
        return self.memory if self.memory_swap is None else self.memory_swap

    def cfs(self):
        """(quota, period) in microseconds for the CFS bandwidth controller; quota -1 = none."""
        if self.nano_cpus:
            period = DEFAULT_CPU_PERIOD
            return self.nano_cpus * period // NANO, period
        quota = self.cpu_quota if self.cpu_quota not in (None, 0) else -1
        return quota, self.cpu_period or DEFAULT_CPU_PERIOD

    @property
    def effective_pids_limit(self):
        return self.pids_limit if self.pids_limit and self.pids_limit > 0 else None

    def describe(self):
        """One line for humans: "memory 64MiB (no swap), 0.5 CPUs, 64 processes"."""
        parts = []
        if self.memory is not None:
            swap = self.effective_memory_swap
            extra = ("unlimited swap" if swap == -1 else "no swap" if swap == self.memory
                     else f"+{format_bytes(swap - self.memory)} swap")
            parts.append(f"memory {format_bytes(self.memory)} ({extra})")
        if self.nano_cpus:
            parts.append(f"{format_cpus(self.nano_cpus)} CPUs")
        elif self.cpu_quota not in (None, 0, -1):
            quota, period = self.cfs()
            parts.append(f"CPU quota {quota}us per {period}us")
        if self.effective_pids_limit:
            parts.append(f"{self.effective_pids_limit} processes")
        return ", ".join(parts) or "no limits"

    # ---- validation ---------------------------------------------------------------------------
    def validate(self):
        self.validate_fields()
        self.validate_combination()

    def validate_fields(self):
        """Each field on its own: an integer, not negative, not beyond what the kernel holds."""
        for name, value in self.to_dict().items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidArgument(f"{name} must be an integer, not {value!r}")
        for value, flag in ((self.memory, "--memory"), (self.memory_swap, "--memory-swap"),
                            (self.pids_limit, "--pids-limit"), (self.cpu_quota, "--cpu-quota")):
            if value is not None and value > INT64_MAX:
                raise InvalidArgument(f"invalid {flag} {value}: too large (at most {INT64_MAX}, "
                                      "a signed 64-bit integer)")
        if self.memory is not None:
            if self.memory < 0:
                raise InvalidArgument(f"invalid memory limit {self.memory}: negative")
            if self.memory < MIN_MEMORY:
                raise InvalidArgument(
                    f"memory limit {format_bytes(self.memory)} is too small: the minimum is "
                    f"6MiB (a process cannot even start below it)")
        if self.memory_swap is not None:
            if self.memory_swap < -1:
                raise InvalidArgument(f"invalid memory+swap limit {self.memory_swap}: negative "
                                      "(-1 means unlimited swap)")
        if self.nano_cpus is not None:
            ncpu = host_cpus()
            if self.nano_cpus <= 0 or self.nano_cpus > ncpu * NANO:
                raise InvalidArgument(
                    f"invalid CPU count {format_cpus(self.nano_cpus) if self.nano_cpus > 0 else self.nano_cpus}: "
                    f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs "
                    "available")
            if self.nano_cpus * DEFAULT_CPU_PERIOD // NANO < MIN_CPU_QUOTA:
                raise InvalidArgument("invalid CPU count: the minimum is 0.01 CPUs")
        if self.cpu_period is not None and not MIN_CPU_PERIOD <= self.cpu_period <= MAX_CPU_PERIOD:
            raise InvalidArgument(f"invalid CPU period {self.cpu_period}: it must be between "
                                  f"{MIN_CPU_PERIOD} and {MAX_CPU_PERIOD} microseconds")
        if self.cpu_quota is not None and self.cpu_quota != -1:
            if self.cpu_quota < 0:
                raise InvalidArgument(f"invalid CPU quota {self.cpu_quota}: negative "
                                      "(-1 means unlimited)")
            if self.cpu_quota < MIN_CPU_QUOTA:
                raise InvalidArgument(f"invalid CPU quota {self.cpu_quota}: it cannot be less "
                                      f"than 1ms ({MIN_CPU_QUOTA} microseconds)")
        if self.pids_limit is not None and self.pids_limit < -1:
            raise InvalidArgument(f"invalid pids limit {self.pids_limit}: negative "
                                  "(0 or -1 means unlimited)")

    def validate_combination(self):
        """What the fields mean together (a whole container's limits, not an update's)."""
        if self.memory_swap is not None:
            if self.memory is None:
                raise InvalidArgument("a memory+swap limit needs a memory limit too (--memory)")
            if self.memory_swap != -1 and self.memory_swap < self.memory:
                raise InvalidArgument(
                    f"memory+swap limit {format_bytes(self.memory_swap)} is smaller than the "
                    f"memory limit {format_bytes(self.memory)}: it counts memory plus swap, so it "
                    "must be at least as large")
        if self.nano_cpus is not None and (self.cpu_quota not in (None, 0)
                                           or self.cpu_period not in (None, 0)):
            raise InvalidArgument("conflicting options: --cpus (nano_cpus) cannot be combined "
                                  "with --cpu-quota or --cpu-period")


@dataclass(frozen=True)
class LimitUpdate(Resources):
    """The fields one `docker update` sets, each checked on its own (a too large or malformed
    value fails before any container is touched). Together they need not make a container's
    limits (`--memory-swap` alone is fine when the container has `--memory`): `merged` checks
    the result."""

    def validate(self):
        self.validate_fields()
