"""Re-record the cgroupfs fixtures in this directory (see README.md). Needs root.

    .venv/bin/python tests/data/cgroupfs/record.py v1    # a container on this host (cgroup v1)
    .venv/bin/python tests/data/cgroupfs/record.py v2    # a group in a QEMU guest (cgroup v2)

Both run the same kind of workload in a group with limits: ~4 MB of memory, some CPU, 4 MiB
written with O_DIRECT (so that the block layer charges the group), then copy every readable
file of the group. The numbers in tests/test_cgroups_parse.py are read off the recorded files.
"""
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio")
# The memory is taken last: later commands let busybox sh give its memory back.
WORKLOAD = ("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; "
            "dd if=/dev/zero of={target} bs=1M count=4 oflag=direct 2>/dev/null; "
            "x=$(head -c 4000000 /dev/zero | tr '\\0' a); "
            "echo recorded > {marker}; sleep 60; echo ${{#x}}")


def readable_files(directory):
    """{name: text} of the regular files in a cgroup directory that can be read."""
    out = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if not entry.is_file():
            continue
        try:
            with open(entry.path) as f:
                out[entry.name] = f.read()
        except OSError:
            pass                                  # write-only (cgroup.event_control, ...)
    return out


def save(files, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (dest / name).write_text(text)


def record_v1():
    from ctrkernel.runtime import run
    from ctrkernel.runtime.cgroups import Resources
    limits = Resources.from_docker(mem_limit="64m", cpus="0.5", pids_limit=32)
    c = run("busybox", ["sh", "-c", WORKLOAD.format(target="/tmp/f", marker="/tmp/done")],
            detach=True, resources=limits)
    try:
        # This kernel counts v1 blkio bytes only on devices with a throttle rule: set one that
        # is never reached (1 GB/s) on the disk under the container, before its dd runs.
        dev = os.stat(c.upper_dir).st_dev
        with open(os.path.join(c.cgroup.dirs["blkio"], "blkio.throttle.write_bps_device"),
                  "w") as f:
            f.write(f"{os.major(dev)}:{os.minor(dev)} 1000000000")
        deadline = time.monotonic() + 60
        while not os.path.exists(f"{c.upper_dir}/tmp/done") and time.monotonic() < deadline:
            time.sleep(0.2)
        dest = HERE / "v1"
        shutil.rmtree(dest, ignore_errors=True)
        for controller in V1_CONTROLLERS:
            save(readable_files(c.cgroup.dirs[controller]), dest / controller)
    finally:
        c.remove(force=True)


GUEST = r"""
mount -t cgroup2 none /sys/fs/cgroup
[ -e /host/sys/fs/cgroup/cgroup.controllers ] || mount -t cgroup2 none /host/sys/fs/cgroup
insmod /host/lib/modules/$(uname -r)/kernel/drivers/block/brd.ko rd_nr=1 rd_size=16384
chroot /host /usr/bin/env CTRKERNEL_HOME=/tmp/ctrkernel-home PYTHONPATH={repo} \
    {python} {repo}/tests/data/cgroupfs/record.py v2-in-guest
"""


def record_v2_in_guest():
    """Inside the guest: the group, the workload, the files as one JSON console line."""
    from ctrkernel.runtime.cgroups import Resources
    from ctrkernel.runtime.cgroups.v2 import V2Manager
    import subprocess
    cg = V2Manager("/sys/fs/cgroup").create("recorded", Resources.from_docker(
        mem_limit="32m", memswap_limit="32m", cpus="0.5", pids_limit=16))
    script = WORKLOAD.format(target="/dev/ram0", marker="/tmp/done")
    p = subprocess.Popen(["/bin/busybox", "sh", "-c", script], preexec_fn=cg.enter)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists("/tmp/done") and time.monotonic() < deadline:
            time.sleep(0.2)
        print("CGV2-TREE " + json.dumps(readable_files(cg.path)), flush=True)
    finally:
        cg.destroy()
        p.wait()


def record_v2():
    from ctrkernel.vm import run_in_guest
    repo = HERE.parents[2]
    result = run_in_guest(GUEST.format(repo=repo, python=repo / ".venv" / "bin" / "python"),
                          timeout=300)
    line = next((ln for ln in result.output.splitlines() if ln.startswith("CGV2-TREE ")), None)
    if line is None:
        sys.exit(f"the guest printed no tree (status {result.exit_code}):\n{result.output}")
    dest = HERE / "v2" / "recorded"
    shutil.rmtree(HERE / "v2", ignore_errors=True)
    save(json.loads(line[len("CGV2-TREE "):]), dest)


if __name__ == "__main__":
    {"v1": record_v1, "v2": record_v2, "v2-in-guest": record_v2_in_guest}[sys.argv[1]]()
