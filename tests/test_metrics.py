"""Metrics: Docker's stats shape and the docker CLI's arithmetic (on recorded daemon responses),
then live samples of real containers, a process tree and this session's own cgroup."""
import json
import subprocess
import sys
import time

import pytest

from conftest import REPO, binder_sim, requires_isolation
from ctrkernel import metrics
from ctrkernel.metrics.docker import bytes_size, human_size

DATA = REPO / "tests" / "data" / "docker_stats"


def recorded(name):
    return json.loads((DATA / name).read_text())


# ---- the docker CLI's arithmetic on recorded daemon responses -------------------------------
def test_row_reproduces_the_docker_cli_line_recorded_with_the_response():
    s = recorded("v2-one-shot.json")
    r = metrics.row(s)
    # docker container stats printed, for this container at that moment:
    # 1552aca76806   aria2   0.03%   12.81MiB / 10.63GiB   0.12%   21.1GB / 933MB   168MB / 13.3MB   2
    assert (r["ID"], r["Name"]) == ("1552aca76806", "aria2")
    assert r["MemUsage"] == "12.81MiB / 10.63GiB"
    assert r["MemPerc"] == "0.12%"
    assert r["NetIO"] == "21.1GB / 933MB"
    assert r["BlockIO"] == "168MB / 13.3MB"
    assert r["PIDs"] == "2"


def test_cpu_percent_is_the_cli_formula():
    s = recorded("v1-api-example.json")
    cpu_delta = 100215355 - 100093996
    system_delta = 739306590000000 - 9492140000000
    assert metrics.cpu_percent(s) == pytest.approx(cpu_delta / system_delta * 4 * 100)
    # A one-shot response has an empty precpu_stats: no system delta, so the CLI shows 0.00%
    # unless it has its own previous sample.
    one_shot = recorded("v2-one-shot.json")
    assert metrics.cpu_percent(one_shot) == pytest.approx(
        3955663822000 / 8303217570000000 * 4 * 100)
    one_shot["cpu_stats"]["cpu_usage"]["total_usage"] = 0
    assert metrics.cpu_percent(one_shot) == 0.0


def test_memory_usage_leaves_out_inactive_file_cache_as_the_cli_does():
    v1 = {"usage": 1000, "stats": {"total_inactive_file": 300, "inactive_file": 100}}
    v2 = {"usage": 1000, "stats": {"inactive_file": 200}}
    assert metrics.memory_usage(v1) == 700          # v1: total_inactive_file wins
    assert metrics.memory_usage(v2) == 800
    assert metrics.memory_usage({"usage": 100, "stats": {"inactive_file": 500}}) == 100


def test_go_units_formatting():
    assert bytes_size(0) == "0B"
    assert bytes_size(1536) == "1.5KiB"
    assert bytes_size(64 << 20) == "64MiB"
    assert human_size(999) == "999B"
    assert human_size(168443904) == "168MB"


# ---- live: our containers in Docker's shape --------------------------------------------------
def _keys(d):
    return set(d) if isinstance(d, dict) else set()


@pytest.fixture
def busy_container():
    from ctrkernel.runtime import run
    from ctrkernel.runtime.cgroups import Resources
    c = run("busybox", ["sh", "-c", "while :; do :; done"], detach=True,
            resources=Resources(memory=64 << 20, nano_cpus=500_000_000, pids_limit=32))
    yield c
    c.remove(force=True)


@requires_isolation("full")
def test_stats_has_the_shape_of_a_real_docker_response(busy_container):
    ours = metrics.stats(busy_container, interval=1.0)
    real_v1, real_v2 = recorded("v1-api-example.json"), recorded("v2-one-shot.json")
    # Every top-level field a real daemon sends (networks is omitted when a container has no
    # interface but loopback, as Docker does for --network none).
    assert _keys(real_v2) - {"networks"} <= _keys(ours)
    assert _keys(ours) - _keys(real_v2) == set()
    for part in ("cpu_stats", "precpu_stats"):
        assert _keys(real_v1[part]) == _keys(ours[part])
        assert _keys(real_v1[part]["cpu_usage"]) == _keys(ours[part]["cpu_usage"])  # v1 percpu
    assert _keys(real_v1["memory_stats"]) == _keys(ours["memory_stats"])   # v1 fields
    assert _keys(real_v2["blkio_stats"]) == _keys(ours["blkio_stats"])
    assert "total_inactive_file" in ours["memory_stats"]["stats"]          # cgroup v1 names
    # Values that mean what Docker's mean.
    assert ours["memory_stats"]["limit"] == 64 << 20
    assert ours["pids_stats"] == {"current": 1, "limit": 32}
    assert ours["preread"] < ours["read"]
    assert ours["cpu_stats"]["online_cpus"] >= 1
    assert ours["cpu_stats"]["throttling_data"]["throttled_periods"] > 0   # held at its quota
    assert 25 < metrics.cpu_percent(ours) < 75          # --cpus 0.5 is 50% as docker counts
    assert metrics.row(ours)["MemUsage"].endswith(" / 64MiB")


@requires_isolation("full")
def test_stream_gives_each_sample_the_previous_one_as_precpu(busy_container):
    stream = metrics.stats(busy_container, stream=True, interval=0.3)
    first, second = next(stream), next(stream)
    assert first["preread"] == "0001-01-01T00:00:00Z"
    assert second["preread"] == first["read"]
    assert second["precpu_stats"]["cpu_usage"] == first["cpu_stats"]["cpu_usage"]
    one_shot = busy_container.stats(one_shot=True)       # docker-py: container.stats(...)
    assert one_shot["preread"] == "0001-01-01T00:00:00Z"


# ---- other sources ---------------------------------------------------------------------------
def test_process_tree_source_counts_a_tree_from_proc():
    p = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & while :; do :; done"])
    try:
        source = metrics.ProcessTreeSource(p, name="tree")
        rec = metrics.Recorder([source], interval=0.2).record(1.2)
        last = rec.points("tree")[-1]
        assert last.pids == 3 and last.memory_used > 0
        assert last.cpu_percent > 20                    # the busy loop
        assert "no limit" in source.label
        assert metrics.UNITS["cpu_percent"] == "% of one CPU"
    finally:
        p.kill()
        p.wait()
    time.sleep(0.1)
    assert source.read() is None or source.status() == "exited"


def test_session_cgroup_is_observed_read_only_and_labelled():
    source = metrics.SessionCgroupSource()
    assert "read-only" in source.label and "not created or limited by ctrkernel" in source.label
    sample = source.read()
    assert sample.stats.memory_usage > 0
    assert sample.stats.cpu_usage_ns > 0


@requires_isolation("full")
def test_recorder_notices_an_oom_kill_and_the_exit():
    from ctrkernel.lessons import cgroups as lesson
    hog = lesson.start(lesson.memory_hog(pause=0.05), "ctrkernel-test-hog", memory="24m")
    try:
        rec = metrics.Recorder([hog], interval=0.2).record(30, until=lesson.all_stopped)
        kinds = [e.kind for e in rec.events]
        assert "oom" in kinds and "exit" in kinds, rec.events
        assert rec.points(hog.name)[-1].status == "exited (137, OOM killed)"
        assert all(p.memory_used <= 24 << 20 for p in rec.points(hog.name))
    finally:
        hog.remove(force=True)


@requires_isolation("full")
def test_cli_stats_no_stream_prints_the_docker_table(busy_container):
    done = subprocess.run([sys.executable, "-m", "ctrkernel", "stats", "--no-stream",
                           busy_container.name], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, line = done.stdout.splitlines()
    assert header.startswith("CONTAINER ID   NAME")
    assert "MEM USAGE / LIMIT" in header and "PIDS" in header
    assert line.startswith(busy_container.short_id) and "/ 64MiB" in line
    done = subprocess.run([sys.executable, "-m", "ctrkernel", "stats", "--no-stream", "--format",
                           "{{.Name}} {{.PIDs}}", busy_container.name],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"{busy_container.name} 1"


def test_on_a_binder_like_host_metrics_say_limits_are_not_enforced(unprivileged_home):
    script = (
        "from ctrkernel import metrics\n"
        "from ctrkernel.lessons import cgroups as lesson\n"
        "c = lesson.start(lesson.cpu_burner(), 'binder-burner', cpus=0.5, memory='64m')\n"
        "try:\n"
        "    rec = metrics.Recorder([c, 'session'], interval=0.25).record(1.5)\n"
        "    print(rec.label(c.name))\n"
        "    print(rec.label('this session'))\n"
        "    print('cpu', rec.points(c.name)[-1].cpu_percent)\n"
        "finally:\n"
        "    c.remove(force=True)\n")
    done = binder_sim([sys.executable, "-c", script], timeout=120,
                      env={"CTRKERNEL_HOME": str(unprivileged_home), "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "limits not enforced" in out
    assert "this session's own cgroup" in out and "read-only" in out
