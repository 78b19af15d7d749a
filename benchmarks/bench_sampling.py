"""What sampling costs: 10 running containers sampled at 4 Hz for a minute.

    python benchmarks/bench_sampling.py [--containers 10] [--hz 4] [--seconds 60] [--json]

ctrkernel side: a separate Python process runs `ctrkernel.metrics.Recorder` over the containers
(each round reads every container's cgroup files through Cgroup.stats(), /proc/stat
for the host CPU, and the container's state to notice exits) and reports the CPU time it used
during the sampling window (process_time: all its threads), as a percentage of one core.
Target: under 2% of one core.

Peer (there is no Docker here): a shell loop that reads the same cgroup files with `cat`, one
`cat` per container per round, at the same rate: the files `docker stats` reads through the
daemon. Its CPU is the shell's plus its reaped `cat`s (wait4 rusage).

Where containers cannot run (not root), it says so and samples plain `sleep` processes instead.
Must run as root for the cgroup numbers.
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

SAMPLER = textwrap.dedent("""
    import json, sys, time
    from ctrkernel.runtime import get
    from ctrkernel.metrics import Recorder
    names, hz, seconds = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    rec = Recorder([get(n) for n in names], interval=1 / hz)
    cpu0, wall0 = time.process_time(), time.monotonic()
    rec.record(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    print(json.dumps({"cpu_s": cpu, "wall_s": wall, "rounds": rec.rounds,
                      "samples": sum(len(v) for v in rec.series.values())}))
""")

FILES = ["memory/{}/memory.usage_in_bytes", "memory/{}/memory.limit_in_bytes",
         "memory/{}/memory.stat", "cpuacct/{}/cpuacct.usage", "cpu/{}/cpu.stat",
         "pids/{}/pids.current", "pids/{}/pids.max", "blkio/{}/blkio.throttle.io_service_bytes"]


def start_containers(n):
    from ctrkernel.runtime import run
    from ctrkernel.runtime.cgroups import Resources
    return [run("busybox", ["sleep", "3600"], detach=True, name=f"bench-sampling-{i}",
                resources=Resources(memory=32 << 20, pids_limit=16)) for i in range(n)]


def run_ours(names, hz, seconds):
    done = subprocess.run([sys.executable, "-c", SAMPLER, json.dumps(names), str(hz),
                           str(seconds)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    result["percent_of_one_core"] = 100 * result["cpu_s"] / result["wall_s"]
    return result


def run_peer(containers, hz, seconds):
    paths = []
    for c in containers:
        rel = f"ctrkernel/{c.id}"
        files = [f"/sys/fs/cgroup/{f.format(rel)}" for f in FILES]
        paths.append(" ".join(files + ["/proc/stat"]))
    rounds = int(seconds * hz)
    script = (f"i=0; while [ $i -lt {rounds} ]; do "
              + " ".join(f"cat {p} >/dev/null;" for p in paths)
              + f" sleep {1 / hz}; i=$((i+1)); done")
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", script])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    # The shell's own `sleep` children are in the rusage too: count them, they are the peer's
    # way to keep its rate.
    cpu = usage.ru_utime + usage.ru_stime
    return {"cpu_s": cpu, "wall_s": wall, "rounds": rounds,
            "percent_of_one_core": 100 * cpu / wall}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--hz", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from ctrkernel.host import doctor
    if doctor().isolation != "full":
        sys.exit("bench_sampling: run as root (containers with cgroups); this host's isolation "
                 f"is {doctor().isolation}")
    containers = start_containers(args.containers)
    try:
        names = [c.name for c in containers]
        ours = run_ours(names, args.hz, args.seconds)
        peer = run_peer(containers, args.hz, args.seconds)
    finally:
        for c in containers:
            c.remove(force=True)
    report = {
        "what": f"{args.containers} running containers sampled at {args.hz:g} Hz for "
                f"{args.seconds:g} s",
        "ctrkernel.metrics.Recorder": ours,
        "peer: bash loop of `cat` over the same cgroup files + /proc/stat": peer,
        "target": "under 2% of one core",
        "met": ours["percent_of_one_core"] < 2.0,
        "ratio_ours_to_peer": ours["cpu_s"] / peer["cpu_s"] if peer["cpu_s"] else None,
        "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["what"])
        print(f"  ctrkernel Recorder: {ours['percent_of_one_core']:.2f}% of one core "
              f"({ours['cpu_s']:.2f} s CPU in {ours['wall_s']:.1f} s, {ours['rounds']} rounds)")
        print(f"  peer (cat loop)   : {peer['percent_of_one_core']:.2f}% of one core "
              f"({peer['cpu_s']:.2f} s CPU in {peer['wall_s']:.1f} s)")
        print(f"  target under 2%: {'met' if report['met'] else 'NOT met'}; "
              f"ours / peer = {report['ratio_ours_to_peer']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
