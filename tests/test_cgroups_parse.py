"""The cgroup parsers and stats readers on real recorded file trees (tests/data/cgroupfs/).

The expected numbers are read off the recorded files by hand (see the README there for how they
were made); what is checked is that each reader picks the right file, the right line and the
right unit (v2 reports CPU time in microseconds, CgroupStats holds nanoseconds; v1's memsw is
memory + swap, CgroupStats holds swap alone).
"""
from pathlib import Path

import pytest

from ctrkernel.metrics import fastread
from ctrkernel.runtime.cgroups import Resources, parse, v1, v2

DATA = Path(__file__).parent / "data" / "cgroupfs"
V1_DIRS = {c: str(DATA / "v1" / c) for c in ("memory", "cpu", "cpuacct", "pids", "blkio")}
V2_DIR = str(DATA / "v2" / "recorded")


# ---- the pure parsers -------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("1234\n", 1234), ("max\n", None), ("-1\n", None), ("", None),
    ("9223372036854771712\n", None),            # v1's page-aligned "no limit"
    ("67108864\n", 64 << 20)])
def test_single_values(text, expected):
    assert parse.value(text) == expected


def test_cpu_max_lines():
    assert parse.cpu_max("50000 100000\n") == (50000, 100000)
    assert parse.cpu_max("max 100000\n") == (None, 100000)


def test_nested_keyed_io_stat_line():
    stat = parse.nested_keyed("1:0 rbytes=0 wbytes=4194304 rios=0 wios=4 dbytes=0 dios=0\n")
    assert stat == {"1:0": {"rbytes": 0, "wbytes": 4194304, "rios": 0, "wios": 4,
                            "dbytes": 0, "dios": 0}}


def test_proc_cgroup_of_a_hybrid_host():
    text = "4:memory:/process_api/0c\n2:cpu,cpuacct:/\n0::/\n"
    assert parse.proc_cgroup(text) == {"memory": "/process_api/0c", "cpu": "/", "cpuacct": "/",
                                       "": "/"}


# ---- cgroup v1, recorded on this project's host -----------------------------------------------
def test_v1_memory_numbers():
    s = v1.read_stats(V1_DIRS)
    assert s.source == "cgroup v1"
    assert (s.memory_usage, s.memory_limit, s.memory_max_usage) == (4644864, 64 << 20, 8687616)
    assert s.memory_failcnt == 0 and s.oom_kills == 0
    assert s.memory_stat["rss"] == 4210688 and s.memory_stat["cache"] == 8192
    # memsw usage 4644864 - usage 4644864 and memsw limit 64m - limit 64m: no swap at all
    assert (s.swap_usage, s.swap_limit) == (0, 0)


def test_v1_cpu_numbers():
    s = v1.read_stats(V1_DIRS)
    assert s.cpu_usage_ns == 388185297
    assert (s.cpu_user_ns, s.cpu_system_ns) == (376000000, 28000000)
    assert s.cpu_percpu_ns == [43577651, 344607646]
    assert sum(s.cpu_percpu_ns) == s.cpu_usage_ns
    assert (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns) == (10, 7, 332321802)
    assert (s.cpu_quota_us, s.cpu_period_us) == (50000, 100000)


def test_v1_pids_and_block_io_numbers():
    s = v1.read_stats(V1_DIRS)
    assert (s.pids_current, s.pids_limit, s.pids) == (2, 32, [3946, 3964])
    assert (s.blkio_read_bytes, s.blkio_write_bytes) == (0, 4194304)
    assert {"major": 254, "minor": 0, "op": "Write", "value": 4194304} in s.blkio_devices


def test_v1_limits_read_back():
    assert v1.read_resources(V1_DIRS) == Resources(memory=64 << 20, memory_swap=64 << 20,
                                                   cpu_quota=50000, cpu_period=100000,
                                                   pids_limit=32)


def test_v1_fast_reader_agrees_with_the_full_one():
    fast, full = fastread.read_v1(fastread.FileReader(), V1_DIRS), v1.read_stats(V1_DIRS)
    for name in ("memory_usage", "memory_limit", "cpu_usage_ns", "cpu_throttled_ns",
                 "cpu_quota_us", "pids_current", "pids_limit", "blkio_write_bytes"):
        assert getattr(fast, name) == getattr(full, name), name


# ---- cgroup v2, recorded in a QEMU guest --------------------------------------------------------
def test_v2_memory_numbers():
    s = v2.read_stats(V2_DIR)
    assert s.source == "cgroup v2"
    assert (s.memory_usage, s.memory_limit, s.memory_max_usage) == (6152192, 32 << 20, 10104832)
    assert s.memory_stat["anon"] == 4214784 and s.memory_stat["file"] == 1552384
    assert (s.swap_usage, s.swap_limit) == (0, 0)          # memory.swap.max 0: no swap
    assert s.oom_kills == 0 and s.memory_failcnt is None    # v2 has no failcnt


def test_v2_cpu_numbers_are_converted_to_nanoseconds():
    s = v2.read_stats(V2_DIR)
    assert s.cpu_usage_ns == 8122259 * 1000
    assert (s.cpu_user_ns, s.cpu_system_ns) == (5850916 * 1000, 2271343 * 1000)
    assert (s.cpu_periods, s.cpu_throttled_periods) == (164, 162)
    assert s.cpu_throttled_ns == 7389512 * 1000
    assert (s.cpu_quota_us, s.cpu_period_us) == (50000, 100000)
    assert s.cpu_percpu_ns == []                            # v2 has no per-CPU counters


def test_v2_pids_and_io_numbers():
    s = v2.read_stats(V2_DIR)
    assert (s.pids_current, s.pids_limit, s.pids) == (2, 16, [114, 120])
    assert (s.blkio_read_bytes, s.blkio_write_bytes) == (0, 4194304)
    assert s.blkio_devices == [{"major": 1, "minor": 0, "op": "read", "value": 0},
                               {"major": 1, "minor": 0, "op": "write", "value": 4194304}]


def test_v2_limits_read_back_in_dockers_terms():
    # memory.swap.max 0 is swap alone; Docker's memory_swap is memory + swap
    r = v2.read_resources(V2_DIR)
    assert r == Resources(memory=32 << 20, memory_swap=32 << 20, cpu_quota=50000,
                          cpu_period=100000, pids_limit=16)
    assert r.describe() == "memory 32MiB (no swap), CPU quota 50000us per 100000us, 16 processes"


def test_v2_group_state_files():
    assert v2.events(V2_DIR) == {"populated": 1, "frozen": 0}


def test_v2_fast_reader_agrees_with_the_full_one():
    fast, full = fastread.read_v2(fastread.FileReader(), V2_DIR), v2.read_stats(V2_DIR)
    for name in ("memory_usage", "memory_limit", "cpu_usage_ns", "cpu_user_ns",
                 "cpu_throttled_ns", "cpu_quota_us", "pids_current", "pids_limit",
                 "blkio_write_bytes", "oom_kills"):
        assert getattr(fast, name) == getattr(full, name), name


def test_a_missing_file_reads_as_unknown_not_zero(tmp_path):
    # a v2 group without the memory controller: no memory numbers at all
    (tmp_path / "cpu.stat").write_text("usage_usec 10\nuser_usec 6\nsystem_usec 4\n")
    s = v2.read_stats(str(tmp_path))
    assert s.memory_usage is None and s.memory_limit is None and s.pids_current is None
    assert s.cpu_usage_ns == 10_000 and s.cpu_throttled_ns is None
