#!/usr/bin/env python3
"""Layer benchmark: making a layer (tar + gzip + sha256 of both streams, layers.py) and
unpacking one (extract.py, with every safety check and both digests verified), against GNU tar
and gzip on the same trees in the same run.

Two trees: 10,000 small files (metadata-bound), and one 200 MB file (bandwidth-bound) whose
bytes are the host's own shared libraries, so it compresses like real layer content.

The fair comparison is at the same gzip level: GNU `tar czf` runs gzip at its default, 6, so
ours is measured at 6 too; ours is also shown at its default, 1 (layers.DEFAULT_LEVEL), against
`tar -I 'gzip -1'`. The GNU pipeline hashes only the compressed stream (`| sha256sum`); ours
also hashes the uncompressed tar (the diff_id), which is extra work it is not excused from.

Per entry, the work is done by the C loops (ctrkernel/image/layertar.c) where a compiler is
available, as on this machine; `--python` measures the Python reference instead (what a host
without a compiler, such as Binder, runs).

    .venv/bin/python benchmarks/bench_layers.py [--files 10000] [--big-mb 200] [--dir /dev/shm]
                                                [--python]
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def make_small_tree(root, count):
    words = (b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
             b"omicron pi rho sigma tau upsilon phi chi psi omega\n")
    for i in range(count):
        d = root / f"d{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        # 200 B to 2 KB, a little different each: source files and configs, roughly
        (d / f"f{i:05d}.txt").write_bytes(f"{i}\n".encode() + words * (2 + i % 20))


def make_big_file(root, megabytes):
    root.mkdir(parents=True)
    want = megabytes << 20
    sources = sorted(p for p in Path("/usr/lib/x86_64-linux-gnu").glob("*.so*")
                     if p.is_file() and not p.is_symlink())
    written = 0
    with open(root / "big.bin", "wb") as out:
        while written < want:
            for src in sources:
                data = src.read_bytes()[:want - written]
                out.write(data)
                written += len(data)
                if written >= want:
                    break
    return written


def timed(fn, repeat=1, cleanup=None):
    """Best of `repeat` runs (the small tree takes a fraction of a second: one run is noise)."""
    best = None
    for n in range(repeat):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        best = seconds if best is None else min(best, seconds)
        if cleanup and n < repeat - 1:
            cleanup()
    return best, result


def tree_bytes(root):
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def gnu_create(tree, level):
    cmd = f"tar -C {tree} -cf - . | gzip -{level} -n | sha256sum"
    return subprocess.run(cmd, shell=True, check=True, capture_output=True)


def gnu_extract(blob, dest):
    dest.mkdir()
    subprocess.run(["tar", "-xzf", str(blob), "-C", str(dest)], check=True)


def drop(path):
    shutil.rmtree(path, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--dir", default=None,
                        help="where the trees, the store and the extractions go (default: the "
                             "temp dir). Creating 10,000 files costs this machine's ext4 up to "
                             "0.7 ms each in the kernel, for both tools alike; a tmpfs such as "
                             "/dev/shm measures the tools' own work instead")
    parser.add_argument("--python", action="store_true",
                        help="measure the Python reference loops, not the C ones")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ctrkernel-bench-layers-", dir=args.dir))
    os.environ["CTRKERNEL_HOME"] = str(home)
    from ctrkernel.image import Store, layer_from_dir
    from ctrkernel.image import layertar
    from ctrkernel.image.extract import extract_layer
    layertar.enabled = not args.python
    print("per-entry loops:", "C (layertar.c)" if layertar.available() else
          "Python (extract.py, layers.py)" + ("" if args.python else ": no C compiler here"))

    try:
        trees = {f"{args.files} small files": home / "small",
                 f"one {args.big_mb} MB file": home / "big"}
        small, big = trees.values()
        make_small_tree(small, args.files)
        make_big_file(big, args.big_mb)
        store = Store(home / "images")
        print(f"{'tree':>22} {'what':>26} {'ours':>10} {'GNU':>10} {'ours/GNU':>9}")
        for label, tree in trees.items():
            mb = tree_bytes(tree) / 1e6
            rep = 3 if tree == small else 1
            for level in (6, 1):
                ours, layer = timed(lambda: layer_from_dir(store, tree, level=level), rep)
                gnu, _ = timed(lambda: gnu_create(tree, level), rep)
                what = f"create, gzip -{level}" + (" (fair)" if level == 6 else " (our default)")
                print(f"{label:>22} {what:>26} {mb / ours:7.1f}MB/s {mb / gnu:7.1f}MB/s "
                      f"{gnu / ours:8.2f}x")
                blob = store.blob_path(layer.digest)
                ratio = f"  ({layer.size / layer.tar_size:.0%} of the tar)"
                if level == 6:
                    dest_ours, dest_gnu = home / "x-ours", home / "x-gnu"
                    ours_x, _ = timed(lambda: extract_layer(blob, dest_ours, digest=layer.digest,
                                                            diff_id=layer.diff_id),
                                      rep, lambda: drop(dest_ours))
                    gnu_x, _ = timed(lambda: gnu_extract(blob, dest_gnu), rep,
                                     lambda: drop(dest_gnu))
                    print(f"{label:>22} {'extract (verified)':>26} {mb / ours_x:7.1f}MB/s "
                          f"{mb / gnu_x:7.1f}MB/s {gnu_x / ours_x:8.2f}x{ratio}")
                    drop(dest_ours)
                    drop(dest_gnu)
        print("ratio = GNU seconds / our seconds: above 1 means ours is faster; target >= 0.8")
    finally:
        drop(home)


if __name__ == "__main__":
    main()
