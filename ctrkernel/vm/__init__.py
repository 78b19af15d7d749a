"""Real virtual machines beside containers (QEMU, a busybox initramfs built by ctrkernel).

    from ctrkernel.vm import boot, run_in_guest, VM
    boot()                                   # BootRecord: accelerator, seconds to userspace...
    run_in_guest("cat /proc/version")        # GuestResult(output, exit_code, seconds)

Modules: cpio (newc writer), initramfs (busybox init), qemu (command line, accelerator),
boot (one VM's lifecycle), measure (boot time, memory, sizes, workloads), density.
"""
from ctrkernel.vm.boot import VM, BootRecord, GuestResult, boot, run_in_guest

__all__ = ["VM", "BootRecord", "GuestResult", "boot", "run_in_guest"]
