"""A real VM disk image made from this machine's files, to set beside a container image.

    from ctrkernel.vm import disk
    d = disk.build(directory)        # DiskImage: the raw disk, its sizes, a compressed qcow2
    disk.listing(d.path, "/bin")     # what the ext4 filesystem holds, read without mounting

The disk holds one ext4 filesystem (no partition table: the kernel is told `root=/dev/vda`)
with the smallest operating system this host can supply without a network: static busybox as
/bin/sh, /sbin/init and every applet, an /etc/inittab and rc script, the booted kernel's whole
modules directory, and /boot/vmlinuz + /boot/initrd.img (Debian's own initramfs, which finds
/dev/vda and starts /sbin/init from it). `mke2fs -d` copies a staged directory into the new
filesystem, so neither root nor a mount is needed; the files keep the owner of whoever built
the disk (root here; uid 1000 on a Binder-like host), which does not matter for measuring.

Sizes come from `qemu-img info --output json`: "virtual-size" is the disk the guest sees,
"actual-size" the bytes the file really occupies on the host (a raw file is sparse: the free
space of the filesystem is never written). A compressed qcow2 copy is what a VM image is
shipped as, the counterpart of a container image's gzip-compressed layer blobs.

`boot(disk)` boots it under QEMU the way a cloud VM boots: kernel and initrd from the disk's
/boot, root filesystem from the disk, busybox's init as PID 1, which prints a marker line.
"""
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ctrkernel import paths
from ctrkernel._probe import VM_DISK_TOOLS, tool_path
from ctrkernel.errors import HostLacks, VMError
from ctrkernel.vm import initramfs, qemu
from ctrkernel.vm.boot import VM

# The tools a disk needs, and the Debian package each comes from (the remedy).
TOOLS = VM_DISK_TOOLS
LABEL = "ctrkernel-vm"
INIT_MARKER = "CTRKERNEL-DISK-INIT"
MIB = 1 << 20

INITTAB = """\
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/bin/poweroff -f
"""
# Printed by busybox init's sysinit step: PID 1 from the disk is running. With
# `ctrkernel.poweroff` on the kernel command line (the boot test), the machine then stops.
RCS = f"""\
#!/bin/sh
export PATH=/bin:/sbin
# Debian's initramfs has already moved /proc, /sys and /dev here: mount only what is missing.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw / 2>/dev/null
echo "{INIT_MARKER} pid1=$(cat /proc/1/comm) root=$(awk '$2 == "/" {{print $1 " " $3}}' /proc/mounts | tail -n 1 | tr ' ' ,)"
grep -qw ctrkernel.poweroff /proc/cmdline && {{ sync; poweroff -f; }}
"""


def missing_tools():
    """[(tool, package)] this host lacks for building and reading a disk image (the probe's
    `vm_disk` check decides: ctrkernel.doctor())."""
    from ctrkernel.host import doctor
    missing = (doctor().check("vm_disk").data or {}).get("missing", list(TOOLS))
    return [(tool, TOOLS[tool]) for tool in missing]


def _which(tool):
    return tool_path(tool)


def require_tools(feature="building a VM disk image"):
    """Raise HostLacks naming every missing tool and the packages that provide them."""
    from ctrkernel.host import doctor
    doctor().require("vm_disk", feature)


@dataclass
class DiskImage:
    """A built disk. Bytes throughout; `parts` are the apparent sizes of the files put in."""
    path: str                 # the raw disk image
    release: str              # the kernel release it carries
    virtual_size: int         # the disk the guest sees
    allocated: int            # what the raw file occupies on the host (sparse)
    content: int              # the files' own bytes (the sum of parts)
    parts: dict = field(default_factory=dict)
    qcow2_path: str = None    # a zlib-compressed qcow2 copy (None when not asked for)
    qcow2_bytes: int = None   # that file's size: what shipping the VM image costs
    seconds: float = 0.0      # time to stage and build everything

    def to_dict(self):
        return asdict(self)


def info(path):
    """`qemu-img info --output json` of a disk image, as a dict."""
    done = _run([_which("qemu-img"), "info", "--output", "json", str(path)])
    return json.loads(done.stdout)


def _run(argv, timeout=300):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise VMError(f"{Path(argv[0]).name} did not finish within {timeout} s") from e
    if done.returncode != 0:
        raise VMError(f"{Path(argv[0]).name} failed (status {done.returncode}): "
                      f"{done.stderr.strip()[-500:]}")
    return done


def _tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def _copy_tree(source, target):
    """Copy a directory tree; hard links where source and target share a filesystem, since
    mke2fs only reads the staged files (saves copying ~100 MB of modules)."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)


def stage(root, kernel):
    """Lay out the disk's files in directory `root`; returns {part: bytes}."""
    root = Path(root)
    release = initramfs.kernel_release(kernel)
    busybox = initramfs.find_busybox()
    for d in ("bin", "sbin", "etc/init.d", "dev", "proc", "sys", "tmp", "run", "root", "boot",
              "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in initramfs.busybox_applets(busybox):
        if applet != "busybox" and not (root / "bin" / applet).exists():
            (root / "bin" / applet).symlink_to("busybox")
    (root / "sbin" / "init").symlink_to("../bin/busybox")
    (root / "etc" / "inittab").write_text(INITTAB)
    (root / "etc" / "init.d" / "rcS").write_text(RCS)
    (root / "etc" / "init.d" / "rcS").chmod(0o755)
    (root / "etc" / "hostname").write_text(LABEL + "\n")
    (root / "etc" / "fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    modules = initramfs.modules_dir(release)
    if not modules.is_dir():
        raise HostLacks("building a VM disk image", f"the modules of kernel {release} "
                        f"({modules})", "apt-get install linux-image-cloud-amd64")
    _copy_tree(modules, root / "lib" / "modules" / release)
    shutil.copy2(kernel, root / "boot" / f"vmlinuz-{release}")
    initrd = Path(f"/boot/initrd.img-{release}")
    if os.access(initrd, os.R_OK):
        shutil.copy2(initrd, root / "boot" / f"initrd.img-{release}")
    parts = {"busybox (/bin)": (root / "bin" / "busybox").stat().st_size,
             "kernel modules": _tree_bytes(root / "lib" / "modules"),
             "kernel (vmlinuz)": (root / "boot" / f"vmlinuz-{release}").stat().st_size,
             "initrd": _tree_bytes(root / "boot") - (root / "boot" / f"vmlinuz-{release}")
             .stat().st_size}
    parts["/etc and the rest"] = _tree_bytes(root) - sum(parts.values())
    return parts


def disk_size(content):
    """A disk with room for the files, ext4's metadata and journal, and some free space (a real
    OS disk is never full); whole MiB."""
    return max(64, math.ceil(content * 1.25 / MIB) + 32) * MIB


def build(directory, kernel=None, qcow2=True):
    """Build <directory>/disk.raw (and disk.qcow2, compressed, when asked); a DiskImage.

    HostLacks when mke2fs, debugfs or qemu-img, busybox, a kernel or its modules are missing.
    The staging copy is removed; the caller owns `directory` and what is left in it.
    """
    started = time.monotonic()
    require_tools()
    kernel = qemu.find_kernel(kernel)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "disk.raw"
    staging = Path(tempfile.mkdtemp(prefix="disk-root-", dir=directory))
    try:
        parts = stage(staging, kernel)
        content = sum(parts.values())
        size = disk_size(content)
        raw.unlink(missing_ok=True)
        # -d: populate from the staged tree; -E root_owner: the root directory belongs to root
        # whoever builds; no lazy init, so the inode tables are written now and counted.
        _run([_which("mke2fs"), "-q", "-F", "-t", "ext4", "-L", LABEL, "-d", str(staging),
              "-E", "root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
              str(raw), f"{size // 1024}k"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    described = info(raw)
    image = DiskImage(path=str(raw), release=initramfs.kernel_release(kernel),
                      virtual_size=described["virtual-size"],
                      allocated=described["actual-size"], content=content, parts=parts)
    if qcow2:
        target = directory / "disk.qcow2"
        _run([_which("qemu-img"), "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
              str(target)])
        image.qcow2_path, image.qcow2_bytes = str(target), target.stat().st_size
    image.seconds = round(time.monotonic() - started, 2)
    return image


def _debugfs(path, request):
    """Run one debugfs request on the image. debugfs exits 0 even when it cannot open the
    filesystem or find a file, so its messages are checked here."""
    require_tools("reading a VM disk image")
    done = _run([_which("debugfs"), "-R", request, str(path)])
    for problem in ("while trying to open", "Filesystem not open", "File not found"):
        if problem in done.stderr:
            detail = " ".join(l for l in done.stderr.splitlines() if not l.startswith("debugfs "))
            raise VMError(f"debugfs could not {request!r} in {path}: {detail.strip()[-300:]}")
    return done


def listing(path, directory="/"):
    """{name: size} of a directory inside the disk's ext4 filesystem, read with debugfs (no
    mount). Raises VMError if the image holds no ext2/3/4 filesystem."""
    done = _debugfs(path, f"ls -p {directory}")
    entries = {}
    # ls -p lines: /inode/mode/uid/gid/name/size/
    for line in done.stdout.splitlines():
        fields = line.strip().strip("/").split("/")
        if len(fields) >= 5 and fields[4] not in (".", ".."):
            entries[fields[4]] = int(fields[5]) if len(fields) > 5 and fields[5] else 0
    return entries


def filesystem(path):
    """The superblock as dumpe2fs-style fields read by debugfs: {"Filesystem features": ...}."""
    done = _debugfs(path, "stats")
    fields = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def extract(path, inside, target):
    """Copy one file out of the disk's filesystem (debugfs dump, no mount)."""
    _debugfs(path, f"dump {inside} {target}")
    if not Path(target).exists() or Path(target).stat().st_size == 0:
        raise VMError(f"{inside} is not in the disk image {path}")
    return Path(target)


@dataclass
class DiskBoot:
    """One boot of a disk image: what PID 1 reported and how long it took (host seconds)."""
    accelerator: str
    seconds_to_init: float    # QEMU's launch -> the disk's rc script printed its marker
    pid1: str                 # the name of PID 1 in the guest ("init": busybox from the disk)
    root: str                 # the guest's root filesystem: "device,type" ("/dev/vda,ext4")
    powered_off: bool
    console: str = field(default="", repr=False)

    def to_dict(self):
        return asdict(self)


def boot(image, timeout=90, memory_mb=256):
    """Boot a DiskImage (or a raw disk path) as a cloud VM boots: the kernel and initrd read
    from the disk's /boot, root=/dev/vda, busybox init from the disk as PID 1; its rc script
    prints INIT_MARKER and powers off. Guest writes go to a throw-away overlay (snapshot=on),
    so the measured disk is unchanged. VMError (console attached) if init is not reached in
    `timeout` seconds; QEMU never outlives the call."""
    raw = Path(getattr(image, "path", image))
    release = getattr(image, "release", None) or next(
        n.split("-", 1)[1] for n in listing(raw, "/boot") if n.startswith("vmlinuz-"))
    work = Path(tempfile.mkdtemp(prefix="disk-boot-", dir=paths.subdir("vm")))
    try:
        kernel = extract(raw, f"/boot/vmlinuz-{release}", work / "vmlinuz")
        initrd = extract(raw, f"/boot/initrd.img-{release}", work / "initrd.img")
        # the verdict for the host's kernel (the same one): a fresh path must not cost a trial
        verdict = qemu.accelerator(qemu.find_kernel())
        vm = VM(kernel=str(kernel), initrd=initrd, disks=[raw], accel=verdict["accel"],
                cpu=verdict["cpu"], memory_mb=memory_mb,
                append=["root=/dev/vda", "ro", "ctrkernel.poweroff"])
        with vm:
            seconds, fields = vm.wait_marker(INIT_MARKER, timeout, "the disk's init")
            vm.wait_poweroff(30)
            return DiskBoot(accelerator=vm.accel, seconds_to_init=round(seconds, 2),
                            pid1=fields.get("pid1", ""), root=fields.get("root", ""),
                            powered_off=vm.powered_off, console=vm.console)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["DiskImage", "DiskBoot", "build", "boot", "info", "listing", "filesystem",
           "extract", "missing_tools", "require_tools", "INIT_MARKER"]
