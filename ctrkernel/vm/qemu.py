"""QEMU's command line, the accelerator choice, and the host facts a boot needs.

Accelerator: KVM when /dev/kvm *actually works*, software emulation (TCG) otherwise. Opening
/dev/kvm is not enough: under a nested hypervisor (as on the machine this course was written
on) QEMU aborts with `-cpu host` ("failed to set MSR") and a guest with the default CPU model
hangs right after the firmware. So the verdict comes from a bounded trial boot, and is cached on
disk keyed by the guest kernel, the QEMU version and the host kernel, because it costs seconds.

Machine types: "microvm" (no PCI, no firmware tables to speak of, virtio over MMIO: the shape of
Firecracker-style micro VMs) where QEMU has it, else "pc". Under emulation the guest is told the
host's TSC frequency (`tsc_early_khz=`): without it the microvm guest hung at TSC calibration in
about 4% of boots.
"""
import functools
import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from ctrkernel import paths
from ctrkernel.errors import HostLacks, VMError

KVM_TRIAL_TIMEOUT = 15.0
# Emulation keeps translated guest code in a cache (QEMU's default: up to 1 GiB). A small guest
# needs far less; a smaller cache keeps the host memory we measure closer to what a VM under KVM
# costs (KVM has no such cache).
TCG_CACHE_MB = 32  # a working KVM boots this guest in well under two seconds


def qemu_binary():
    """The path of qemu-system-x86_64, or HostLacks (the probe's `qemu` check)."""
    from ctrkernel.host import doctor
    doctor().require("qemu", "booting a virtual machine")
    path = shutil.which("qemu-system-x86_64")
    if not path:  # the probe ran with another PATH than ours
        raise HostLacks("booting a virtual machine", "qemu (not on PATH)",
                        "apt-get install qemu-system-x86")
    return path


@functools.lru_cache(maxsize=None)
def qemu_version(binary=None):
    binary = binary or qemu_binary()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else out.strip()


@functools.lru_cache(maxsize=None)
def machine_types(binary=None):
    binary = binary or qemu_binary()
    out = subprocess.run([binary, "-machine", "help"], capture_output=True, text=True,
                         timeout=30).stdout
    return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}


def default_machine():
    return "microvm" if "microvm" in machine_types() else "pc"


def find_kernel(kernel=None):
    """A readable vmlinuz: the one given, else the smallest in /boot (Debian's cloud kernel is a
    quarter of the generic one's size and boots faster)."""
    if kernel:
        if not os.access(kernel, os.R_OK):
            raise HostLacks("booting a virtual machine", f"a readable kernel ({kernel})",
                            "pass a readable vmlinuz")
        return Path(kernel)
    from ctrkernel.host import doctor
    doctor().require("vm_kernel", "booting a virtual machine")
    readable = [Path(k) for k in glob.glob("/boot/vmlinuz-*") if os.access(k, os.R_OK)]
    if not readable:
        raise HostLacks("booting a virtual machine", "vm_kernel (no readable /boot/vmlinuz-*)",
                        "apt-get install linux-image-cloud-amd64")
    cloud = [k for k in readable if k.name.endswith("-cloud-amd64")]
    return sorted(cloud or readable, key=lambda k: (k.stat().st_size, k.name))[0]


@functools.lru_cache(maxsize=None)
def host_tsc_khz():
    """The host's TSC frequency in kHz: the kernel's calibration from dmesg when readable, else
    /proc/cpuinfo's "cpu MHz" (the same number on hosts with a constant TSC)."""
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"tsc: (?:Refined TSC clocksource calibration|Detected): ([\d.]+) MHz", log)
        if m:
            return int(float(m.group(1)) * 1000)
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/cpuinfo") as f:
        m = re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read())
    return int(float(m.group(1)) * 1000) if m else None


def virtiofsd_binary():
    for candidate in ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", shutil.which("virtiofsd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def command(kernel, initrd, *, accel="tcg", machine=None, memory_mb=128, cpus=1, cpu=None,
            append=(), forwards=(), share=None, disks=(), qemu=None):
    """The argv of one boot. The serial console goes to QEMU's stdout; nothing else is attached.

    forwards: [(host_port, guest_port)] through user-mode networking, bound to 127.0.0.1 only.
    share: None, ("9p", host_dir) or ("virtiofs", socket_path): the guest sees tag "hostroot".
    disks: raw disk images, /dev/vda first; the guest's writes go to a temporary overlay
    (snapshot=on, in $TMPDIR), so the images themselves never change.
    """
    machine = machine or default_machine()
    mmio = machine == "microvm"
    argv = [qemu or qemu_binary(), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-accel", accel + (f",tb-size={TCG_CACHE_MB}" if accel == "tcg" else ""), "-m", str(memory_mb), "-smp", str(cpus),
            "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
            "-kernel", str(kernel), "-initrd", str(initrd)]
    if mmio:
        # No option ROMs to load: less for the firmware to do before the kernel.
        argv += ["-M", "microvm,x-option-roms=off",
                 # Modern virtio over MMIO: vhost-user (virtiofsd) refuses legacy devices.
                 "-global", "virtio-mmio.force-legacy=false"]
    else:
        argv += ["-M", machine]
    if cpu:
        argv += ["-cpu", cpu]
    kernel_args = ["console=ttyS0", "quiet", "panic=-1"]
    if mmio:
        kernel_args.append("pci=off")
    if accel == "tcg" and host_tsc_khz():
        kernel_args.append(f"tsc_early_khz={host_tsc_khz()}")
    argv += ["-append", " ".join(kernel_args + list(append))]
    if forwards:
        rules = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in forwards)
        argv += ["-netdev", f"user,id=net0,{rules}",
                 "-device", f"virtio-net-{'device' if mmio else 'pci'},netdev=net0"]
    for n, disk in enumerate(disks):
        argv += ["-drive", f"file={disk},format=raw,if=none,id=disk{n},snapshot=on",
                 "-device", f"virtio-blk-{'device' if mmio else 'pci'},drive=disk{n}"]
    if share:
        kind, where = share
        if kind == "9p":
            argv += ["-virtfs", f"local,path={where},mount_tag=hostroot,security_model=none,"
                                "readonly=on"]
        else:
            # vhost-user needs guest RAM the daemon can map: a shared memfd backend.
            argv += ["-object", f"memory-backend-memfd,id=ram,size={memory_mb}M,share=on",
                     "-machine", "memory-backend=ram",
                     "-chardev", f"socket,id=vfs,path={where}",
                     "-device", f"vhost-user-fs-{'device' if mmio else 'pci'},chardev=vfs,"
                                "tag=hostroot"]
    return argv


# ---- the accelerator verdict -------------------------------------------------------------

def _kvm_opens():
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


def _verdict_key(kernel):
    st = Path(kernel).stat()
    return f"{Path(kernel).resolve()}:{st.st_size}:qemu-{qemu_version()}:host-{os.uname().release}"


def _verdict_file():
    return paths.subdir("vm") / "accelerator.json"


def _outcome(trial):
    detail = trial["detail"]
    if "exited with status" in detail:
        return "QEMU " + ("aborted" if "status -6" in detail else "exited")
    return "hung" if "within" in detail else "failed"


def accelerator(kernel=None, refresh=False, trial=None):
    """{"accel": "kvm"|"tcg", "cpu": model or None, "why": str, "trials": [...]}; cached on disk.

    `trial(accel, cpu) -> (ok, detail)` runs one bounded boot (ctrkernel.vm.boot supplies it).
    """
    kernel = find_kernel(kernel)
    key = _verdict_key(kernel)
    cache = _verdict_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if not refresh and key in known:
        return dict(known[key], cached=True)
    if not _kvm_opens():
        verdict = {"accel": "tcg", "cpu": None, "trials": [],
                   "why": "/dev/kvm cannot be opened: software emulation (TCG)"}
    else:
        if trial is None:
            from ctrkernel.vm.boot import trial_boot as trial
        trials = []
        verdict = None
        for cpu in ("host", None):
            ok, detail = trial("kvm", cpu, kernel)
            trials.append({"accel": "kvm", "cpu": cpu, "ok": ok, "detail": detail})
            if ok:
                verdict = {"accel": "kvm", "cpu": cpu, "trials": trials,
                           "why": f"a trial boot under KVM (-cpu {cpu or 'default'}) reached "
                                  "userspace"}
                break
        if verdict is None:
            # The details (QEMU's abort message, the hang) stay in "trials".
            verdict = {"accel": "tcg", "cpu": None, "trials": trials,
                       "why": "/dev/kvm opens, but trial boots under KVM failed (-cpu host: "
                              f"{_outcome(trials[0])}; default CPU: {_outcome(trials[1])}): "
                              "software emulation (TCG)"}
    known[key] = verdict
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, cache)
    return dict(verdict, cached=False)


__all__ = ["qemu_binary", "qemu_version", "machine_types", "default_machine", "find_kernel",
           "host_tsc_khz", "command", "accelerator", "VMError", "KVM_TRIAL_TIMEOUT"]
