"""`ctrkernel vm boot` and `ctrkernel vm compare`: real virtual machines beside containers."""
import json

from ctrkernel.cli.registry import arg, verb


@verb("boot", group="vm")
@arg("--json", action="store_true", help="print one JSON object")
@arg("--machine", default=None, help="QEMU machine type (default: microvm where available)")
@arg("--kernel", default=None, help="the vmlinuz to boot (default: the host's cloud kernel)")
@arg("--timeout", type=float, default=120, help="seconds before the boot is abandoned")
def boot(args):
    """Boot a minimal VM, report the accelerator and the time to its userspace marker, power off.

    The guest is the host's kernel with an initramfs ctrkernel builds from busybox. KVM is used
    when a trial boot shows it works, software emulation (TCG) otherwise.
    """
    from ctrkernel.vm import boot as boot_vm, qemu
    record = boot_vm("uname -sr", kernel=args.kernel, machine=args.machine, timeout=args.timeout)
    verdict = qemu.accelerator(record.kernel)
    data = dict(record.to_dict(), accelerator_why=verdict["why"])
    data.pop("console")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"accelerator:        {record.accelerator} ({verdict['why']})")
        print(f"machine:            {record.machine}, {record.memory_mb} MiB")
        print(f"kernel:             {record.kernel}")
        print(f"to userspace:       {record.seconds_to_ready:.2f} s after launch "
              f"(guest clock {record.guest_uptime_at_ready:.2f} s)")
        print(f"powered off:        {record.powered_off} after {record.seconds_total:.2f} s")
    return 0 if record.powered_off else 1


@verb("compare", group="vm")
@arg("--json", action="store_true", help="print one JSON object")
def compare(args):
    """Measure a process, a container and a VM side by side: start time, idle memory, sizes,
    and a CPU-bound and a syscall-heavy workload (as ratios to the plain process)."""
    from ctrkernel.lessons.vm import summary
    from ctrkernel.vm import measure
    data = {"start_times": measure.start_times(repeat=1), "idle_memory": measure.idle_memory(),
            "sizes": measure.sizes(), "workloads": measure.workloads()}
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print("start (seconds to 'our code runs'):")
    for kind, seconds in summary(data["start_times"]).items():
        print(f"  {kind:<16} {seconds:8.3f}")
    print("idle memory (host PSS, MiB):")
    for r in data["idle_memory"]["rows"]:
        print(f"  {r['kind']:<16} {r['pss'] / 2**20:8.1f}")
    print("sizes (MiB):")
    for r in data["sizes"]["rows"]:
        print(f"  {r['what']:<10} {r['part']:<32} {r['bytes'] / 2**20:8.1f}")
    print("workloads (time relative to a plain process):")
    for r in data["workloads"]["rows"]:
        print(f"  {r['kind']:<16} {r['workload']:<10} {r['ratio']}")
    for part in data.values():
        if part.get("container_note"):
            print(f"note: {part['container_note']}")
            break
    return 0
