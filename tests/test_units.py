"""Docker's unit strings and the up-front validation of limits."""
import pytest

from ctrkernel.errors import InvalidArgument
from ctrkernel.runtime.cgroups import Resources
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


@pytest.mark.parametrize("kwargs", [dict(mem_limit="1m"), dict(mem_limit="64m", memswap_limit="32m"),
                                    dict(cpus="512"), dict(pids_limit=-5), dict(mem_limit="12zb")])
def test_impossible_limits_fail_before_anything_starts(kwargs):
    with pytest.raises(InvalidArgument):
        Resources.from_docker(**kwargs)


def test_nano_cpus_become_a_cfs_quota():
    assert Resources.from_docker(cpus="0.5").cfs() == (50_000, 100_000)
