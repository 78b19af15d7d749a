#!/usr/bin/env python3
"""Build cache benchmark: a first build, then rebuilds of the unchanged Dockerfile.

The issue's target: an unchanged rebuild is a cache hit end to end "in well under a second".
Runs in a throw-away CTRKERNEL_HOME; prints seconds per build and the blobs each one added.

Peer, in the same run: `podman build` (buildah) of the same Dockerfile and context, with a
private throw-away store (vfs, runc, cgroupfs: crun refuses this host's hybrid cgroups), when
podman is installed and we are root. Ratio = podman's median rebuild / ours.

    .venv/bin/python benchmarks/bench_build.py [--repeat 5]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin APP=/srv/app
WORKDIR $APP
COPY src/ ./
RUN for i in 1 2 3 4 5 6 7 8 9 10; do echo $i > n$i; done
USER 1000:1000
CMD ["ls", "-l"]
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ctrkernel-bench-build-")
    os.environ["CTRKERNEL_HOME"] = home
    from ctrkernel.image.build import Builder

    context = Path(home) / "ctx"
    (context / "src").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", context / "busybox")
    for i in range(200):
        (context / "src" / f"f{i}.txt").write_text(f"file {i}\n" * 20)
    (context / "Dockerfile").write_text(DOCKERFILE)
    blobs = Path(home) / "images" / "oci" / "blobs" / "sha256"
    try:
        timings = []
        for run in range(args.repeat + 1):
            before = len(os.listdir(blobs)) if blobs.exists() else 0
            start = time.perf_counter()
            log = list(Builder(context, tag="bench:1"))
            seconds = time.perf_counter() - start
            added = len(os.listdir(blobs)) - before
            hits = log.count(" ---> Using cache")
            label = "first build" if run == 0 else f"rebuild {run}"
            print(f"{label:>12}: {seconds:.3f} s, cache hits {hits}/8, new blobs {added}")
            if run:
                timings.append(seconds)
        ours = statistics.median(timings)
        print(f"unchanged rebuild: median {ours * 1000:.1f} ms "
              f"over {len(timings)} runs (target: well under 1 s)")
        peer = podman_rebuilds(context, Path(home) / "podman", args.repeat)
        if peer:
            print(f"podman build, unchanged rebuild: median {peer * 1000:.1f} ms; "
                  f"podman / ours = {peer / ours:.1f}x")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def podman_rebuilds(context, base, repeat):
    """Median seconds of podman's unchanged rebuilds (after a first build), or None."""
    podman = shutil.which("podman")
    if not podman or os.geteuid() != 0:
        print("podman build: not measured (needs podman, and root for its private store)")
        return None
    argv = [podman, "--root", str(base / "root"), "--runroot", str(base / "runroot"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend",
            "file", "--runtime", "runc", "--tmpdir", str(base / "tmp")]
    build = argv + ["build", "-q", "--ulimit", "nofile=1024:20000", "--ulimit",
                    "nproc=4096:4096", "--cgroup-parent", "/ctrkernel-bench-podman",
                    "-t", "bench:1", str(context)]
    try:
        timings = []
        for run in range(repeat + 1):
            start = time.perf_counter()
            done = subprocess.run(build, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode:
                print("podman build failed:", done.stderr.strip().splitlines()[-1:])
                return None
            label = "first build" if run == 0 else f"rebuild {run}"
            print(f"{'podman ' + label:>20}: {seconds:.3f} s")
            if run:
                timings.append(seconds)
        return statistics.median(timings)
    finally:
        subprocess.run(argv + ["rmi", "-af"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
