"""Docker's unit strings and the up-front validation of limits."""
import pytest

from ctrkernel.errors import InvalidArgument
from ctrkernel.runtime.cgroups import LimitUpdate, Resources
from ctrkernel.units import parse_bytes, parse_cpus


@pytest.mark.parametrize("text,expected", [("64m", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10),
                                           ("1024", 1024), ("1.5g", 3 << 29), ("64MiB", 64 << 20)])
def test_sizes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["12zb", "-5m", "m", "1.2.3g", ""])
def test_malformed_sizes_are_refused(text):
    with pytest.raises(InvalidArgument):
        parse_bytes(text)


def test_cpus():
    assert parse_cpus("1.5") == 1_500_000_000
    with pytest.raises(InvalidArgument, match="too precise"):
        parse_cpus("0.0000000001")


HUGE = "99999999999999999999"          # beyond int64: only the kernel would refuse it otherwise


@pytest.mark.parametrize("kwargs", [dict(mem_limit="1m"), dict(mem_limit="64m", memswap_limit="32m"),
                                    dict(cpus="512"), dict(pids_limit=-5), dict(mem_limit="12zb")])
def test_impossible_limits_fail_before_anything_starts(kwargs):
    with pytest.raises(InvalidArgument):
        Resources.from_docker(**kwargs)


@pytest.mark.parametrize("kwargs,flag", [
    (dict(pids_limit=HUGE), "--pids-limit"), (dict(cpu_quota=HUGE), "--cpu-quota"),
    (dict(mem_limit=HUGE), "--memory"), (dict(mem_limit="64m", memswap_limit="9000p"), "--memory-swap"),
    (dict(cpu_period=2_000_000), "period")])
def test_out_of_range_limits_are_refused_naming_the_flag(kwargs, flag):
    # Both for a container's limits and for an update's fields: nothing reaches the kernel.
    for kind in (Resources, LimitUpdate):
        with pytest.raises(InvalidArgument, match=flag):
            kind.from_docker(**kwargs)


def test_largest_int64_values_are_accepted():
    top = (1 << 63) - 1
    r = Resources.from_docker(mem_limit=top, pids_limit=top, cpu_quota=top, cpu_period=1_000_000)
    assert (r.memory, r.pids_limit, r.cfs()) == (top, top, (top, 1_000_000))


def test_an_update_of_swap_alone_is_checked_against_the_current_memory_limit():
    update = LimitUpdate.from_docker(memswap_limit="256m")     # alone: not refused yet
    with_memory = Resources.from_docker(mem_limit="64m")
    assert with_memory.merged(update).effective_memory_swap == 256 << 20
    assert with_memory.merged(LimitUpdate.from_docker(memswap_limit="-1")).memory_swap == -1
    with pytest.raises(InvalidArgument, match="needs a memory limit"):
        Resources().merged(update)
    with pytest.raises(InvalidArgument, match="smaller than the memory limit"):
        Resources.from_docker(mem_limit="512m").merged(update)
    with pytest.raises(InvalidArgument, match="needs a memory limit"):
        Resources.from_docker(memswap_limit="256m")    # a whole container's limits: still refused


def test_a_cpu_period_or_quota_cannot_replace_cpus_silently():
    cpus = Resources.from_docker(cpus="0.5")
    for change in (dict(cpu_period=50_000), dict(cpu_quota=20_000)):
        with pytest.raises(InvalidArgument, match="cannot be updated as NanoCPUs has already been set"):
            cpus.merged(LimitUpdate.from_docker(**change))
    assert cpus.merged(LimitUpdate.from_docker(cpus="1")).cfs() == (100_000, 100_000)
    # Without --cpus, a period alone keeps the quota the container had.
    quota = Resources.from_docker(cpu_quota=20_000)
    assert quota.merged(LimitUpdate.from_docker(cpu_period=50_000)).cfs() == (20_000, 50_000)
    # One update giving both --cpus and a period is a contradiction of its own.
    with pytest.raises(InvalidArgument, match="conflicting"):
        Resources().merged(LimitUpdate.from_docker(cpus="0.5", cpu_period=50_000))


def test_nano_cpus_become_a_cfs_quota():
    assert Resources.from_docker(cpus="0.5").cfs() == (50_000, 100_000)
