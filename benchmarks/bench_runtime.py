"""How fast a ctrkernel container starts, against crun and runc; what an idle one costs.

    python benchmarks/bench_runtime.py [-n 30] [--idle 50]

1. Start-to-exit of `true` in busybox, warm and in-process: create + start + wait (all
   namespaces, the overlay root, pivot_root, capabilities dropped), then remove, median of N.
   Against `crun run` and `runc run` of the same root filesystem as an OCI bundle (read-only
   root, their default namespaces: pid, net, ipc, uts, mount). Measured twice: without
   limits, and with the same cgroup limits on both sides (memory 64 MiB without swap, 0.5
   CPU, 64 processes), so that creating and removing the cgroups is in both figures. crun 1.8 refuses this host's
   hybrid cgroup layout unless it runs in a private mount namespace with
   /sys/fs/cgroup/unified unmounted; that wrapper's own cost (`unshare -m sh -c ...; true`) is
   measured too and shown separately.
2. Memory: start `--idle` containers running `sleep`, then sum the proportional (PSS) and
   unique (USS) memory of what ctrkernel keeps per container (its shim), beyond the
   containers' own processes. Must run as root.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def median_ms(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


LIMITS = dict(mem_limit="64m", cpus="0.5", pids_limit=64)


def oci_resources():
    """LIMITS in the OCI runtime spec's terms (linux.resources), as Docker would pass them."""
    memory = 64 << 20
    return {"memory": {"limit": memory, "swap": memory},
            "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 64}}


def oci_bundle(scratch, layer_dirs, name="bundle", resources=None):
    """An OCI bundle whose root is the image's layers flattened into one directory."""
    bundle = Path(scratch) / name
    bundle.mkdir()
    rootfs = bundle / "rootfs"
    from ctrkernel.runtime.rootfs import copy_layers
    copy_layers([str(p) for p in layer_dirs], rootfs)
    for d in ("proc", "sys", "dev"):
        (rootfs / d).mkdir(exist_ok=True)
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["true"]
    spec["process"]["terminal"] = False
    if resources:
        spec["linux"]["resources"] = resources
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def bench_start(image, n, scratch, limited=False):
    from ctrkernel.runtime import create
    from ctrkernel.runtime.cgroups import Resources
    resources = Resources.from_docker(**LIMITS) if limited else None
    tag = "limited" if limited else "plain"

    def ours():
        c = create(image, ["true"], resources=resources)
        c.start()
        assert c.wait()["StatusCode"] == 0
        c.remove()

    def ours_no_remove():
        c = create(image, ["true"], resources=resources)
        c.start()
        c.wait()
        ours_no_remove.made.append(c)
    ours_no_remove.made = []

    ours()  # warm: the probe, the shim's build, the image, imports
    results = {"ctrkernel (create+start+wait+remove)": median_ms(ours, n)}
    results["ctrkernel (create+start+wait)"] = median_ms(ours_no_remove, n)
    for c in ours_no_remove.made:
        c.remove()

    bundle = oci_bundle(scratch, image.layer_dirs(), f"bundle-{tag}",
                        oci_resources() if limited else None)
    counter = iter(range(10 ** 6))

    def crun():
        name = f"bench-crun-{tag}-{os.getpid()}-{next(counter)}"
        subprocess.run(["unshare", "-m", "sh", "-c",
                        f"umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run -b {bundle} {name}"],
                       check=True, stdin=subprocess.DEVNULL)

    def wrapper():
        subprocess.run(["unshare", "-m", "sh", "-c",
                        "umount /sys/fs/cgroup/unified 2>/dev/null; exec true"], check=True)

    def runc():
        name = f"bench-runc-{tag}-{os.getpid()}-{next(counter)}"
        subprocess.run(["runc", "run", "-b", str(bundle), name], check=True,
                        stdin=subprocess.DEVNULL)

    for label, fn in (("crun run (in unshare -m wrapper)", crun),
                      ("  of which the wrapper (unshare -m sh -c ...)", wrapper),
                      ("runc run", runc)):
        try:
            fn()
            results[label] = median_ms(fn, n)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            results[label] = f"failed: {e}"
    return results


def bench_idle(image, count):
    from ctrkernel.runtime import create
    containers = []
    try:
        for _ in range(count):
            c = create(image, ["sleep", "3600"])
            c.start()
            containers.append(c)
        time.sleep(0.5)
        pss = uss = rss = 0
        own = 0
        for c in containers:
            shim = psutil.Process(c._run["shim"]["pid"])
            info = shim.memory_full_info()
            pss, uss, rss = pss + info.pss, uss + info.uss, rss + info.rss
            own += sum(p.memory_full_info().pss for p in c.processes())
        return {"containers": count, "shim PSS total KiB": pss // 1024,
                "shim PSS per container KiB": pss / count / 1024,
                "shim USS per container KiB": uss / count / 1024,
                "shim RSS per container KiB": rss / count / 1024,
                "containers' own processes PSS per container KiB": own / count / 1024,
                "supervisor": containers[0].isolation["supervisor"]}
    finally:
        for c in containers:
            c.remove(force=True)


def report_start(starts, n, limited):
    what = "with limits " + ", ".join(f"{k}={v}" for k, v in LIMITS.items()) if limited \
        else "without limits"
    print(f"start-to-exit of `true` in busybox, {what}, median of {n} (ms):")
    for label, value in starts.items():
        print(f"  {label:<48} {value:8.2f}" if isinstance(value, float) else f"  {label:<48} {value}")
    ours = starts["ctrkernel (create+start+wait+remove)"]
    for other in ("crun run (in unshare -m wrapper)", "runc run"):
        if isinstance(starts.get(other), float):
            print(f"  ratio ctrkernel / {other.split(' (')[0]}: {ours / starts[other]:.2f}")
    crun = starts.get("crun run (in unshare -m wrapper)")
    wrap = starts.get("  of which the wrapper (unshare -m sh -c ...)")
    if isinstance(crun, float) and isinstance(wrap, float):
        print(f"  ratio ctrkernel / crun without its wrapper ({crun - wrap:.2f} ms): "
              f"{ours / (crun - wrap):.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="runs per measurement (median)")
    parser.add_argument("--idle", type=int, default=50, help="idle containers for memory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("run as root: crun, runc and full isolation need it")
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as scratch:
        os.environ.setdefault("CTRKERNEL_HOME", str(Path(scratch) / "home"))
        from ctrkernel.image import get_image
        image = get_image("busybox")
        for limited in (False, True):
            report_start(bench_start(image, args.n, scratch, limited), args.n, limited)
        idle = bench_idle(image, args.idle)
        print(f"memory of {args.idle} idle containers beyond their own processes:")
        for key, value in idle.items():
            print(f"  {key:<48} {value:.1f}" if isinstance(value, float) else f"  {key:<48} {value}")


if __name__ == "__main__":
    main()
