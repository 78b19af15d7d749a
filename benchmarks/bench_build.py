#!/usr/bin/env python3
"""Build cache benchmark: a first build, then rebuilds of the unchanged Dockerfile.

The issue's target: an unchanged rebuild is a cache hit end to end "in well under a second".
Runs in a throw-away CTRKERNEL_HOME; prints seconds per build and the blobs each one added.

    .venv/bin/python benchmarks/bench_build.py [--repeat 5]
"""
import argparse
import os
import shutil
import statistics
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
    blobs = Path(home) / "images" / "blobs" / "sha256"
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
        print(f"unchanged rebuild: median {statistics.median(timings) * 1000:.1f} ms "
              f"over {len(timings)} runs (target: well under 1 s)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
