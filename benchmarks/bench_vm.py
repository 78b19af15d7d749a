#!/usr/bin/env python3
"""Boot time of ctrkernel's minimal VM against a peer in the same run, and start-time ratios.

Peers measured in the same run on the same machine:
- the same kernel booted with Debian's own initramfs (initramfs-tools, /boot/initrd.img-*) to
  "Mounting root file system" (udev has run and loaded drivers): a stock early userspace, for
  comparison with ctrkernel's busybox initramfs;
- `podman run --rm busybox true` where podman and a local busybox image exist, beside
  ctrkernel's container, against a plain process.

Usage: .venv/bin/python benchmarks/bench_vm.py [--repeat N]
"""
import argparse
import json
import shutil
import statistics
import subprocess
import time

from ctrkernel.vm import boot, measure, qemu


def debian_initrd_seconds(timeout=120):
    """Seconds from launch until Debian's initramfs prints its first userspace line."""
    kernel = qemu.find_kernel()
    initrd = kernel.parent / kernel.name.replace("vmlinuz", "initrd.img")
    if not initrd.exists():
        return None
    argv = qemu.command(kernel, initrd, accel=qemu.accelerator(kernel)["accel"], memory_mb=256,
                        append=("rootdelay=1", "root=/dev/nonexistent"))
    # initramfs-tools stays silent when the command line says "quiet".
    at = argv.index("-append") + 1
    argv[at] = argv[at].replace("quiet", "")
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        for raw in proc.stdout:
            # udev has loaded the drivers and the script starts looking for the root disk.
            if b"Mounting root file system" in raw:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                return None
    finally:
        proc.kill()
        proc.wait()
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ours = [boot(None).seconds_to_ready for _ in range(args.repeat)]
    debian = [s for s in (debian_initrd_seconds() for _ in range(args.repeat)) if s]
    result = {"ctrkernel_initramfs_s": statistics.median(ours)}
    if debian:
        result["debian_initramfs_s"] = statistics.median(debian)
        result["ratio_debian_over_ours"] = round(result["debian_initramfs_s"] /
                                                 result["ctrkernel_initramfs_s"], 2)
    starts = measure.start_times(repeat=args.repeat, machines=["microvm"])
    medians = {}
    for row in starts["rows"]:
        medians.setdefault(row["kind"], []).append(row["seconds"])
    result["start_medians_s"] = {k: statistics.median(v) for k, v in medians.items()}
    if shutil.which("podman"):
        t = []
        for _ in range(args.repeat):
            s = time.monotonic()
            done = subprocess.run(["podman", "run", "--rm", "--network=none", "busybox", "true"],
                                  capture_output=True)
            if done.returncode == 0:
                t.append(time.monotonic() - s)
        if t:
            result["start_medians_s"]["podman container"] = statistics.median(t)
    result["accelerator"] = qemu.accelerator()["accel"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
