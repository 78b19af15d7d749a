"""The guest's whole userspace: an initramfs that ctrkernel builds from the host's busybox.

Two newc archives, concatenated (the kernel unpacks them in order, later files win):

- a *base* archive, cached on disk by content: static busybox and a link per applet, /init,
  /dev/console, and the kernel modules the guest needs, copied from /lib/modules/<version>/ of
  the kernel being booted (dependencies resolved with modules.dep, .ko.xz decompressed);
- a small per-boot archive with /etc/ctrkernel/boot.env (what init should do) and the workload.

/init mounts /proc, /sys and /dev, loads the modules, prints the readiness marker on the serial
console, optionally configures networking and mounts the host's root, runs the workload, prints
its exit status, and powers the machine off. Every marker line starts with "CTRKERNEL-".
"""
import hashlib
import lzma
import os
import shutil
import subprocess
from pathlib import Path

from ctrkernel import paths
from ctrkernel.errors import HostLacks, VMError
from ctrkernel.vm.cpio import CpioWriter

READY = "CTRKERNEL-READY"
BEGIN = "CTRKERNEL-BEGIN"
EXIT = "CTRKERNEL-EXIT"

# Drivers for the devices ctrkernel.vm.qemu attaches. Missing ones are skipped (a kernel may have
# them built in: then modules.builtin lists them and nothing needs loading).
BASE_MODULES = (
    "virtio_pci", "virtio_mmio",        # the buses: PCI on "pc", memory-mapped on "microvm"
    "virtio_net",                       # user-mode networking (web servers, hostfwd)
    "virtiofs", "9p", "9pnet_virtio",   # the host's root, shared read-only
    "overlay",                          # containers inside a guest need it
)

INIT = r"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /root /host
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
while read -r module; do insmod "/lib/modules/$module.ko" 2>/dev/null; done < /etc/modules.load
[ -f /etc/ctrkernel/boot.env ] && . /etc/ctrkernel/boot.env
echo "CTRKERNEL-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
ip link set lo up
if [ -n "$CTRKERNEL_NET" ]; then
    # QEMU's user-mode network: fixed addresses, no DHCP needed.
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
if [ -n "$CTRKERNEL_HOSTROOT" ]; then
    mount -t "$CTRKERNEL_HOSTROOT" -o ro hostroot /host \
        || mount -t 9p -o ro,trans=virtio,version=9p2000.L hostroot /host \
        || echo "CTRKERNEL-WARN the host root could not be mounted"
    if [ -n "$CTRKERNEL_SWITCH_ROOT" ]; then
        # Boot the host's own distribution: its root read-only, writes going to a tmpfs.
        mkdir -p /overlay /newroot && mount -t tmpfs tmpfs /overlay
        mkdir -p /overlay/upper /overlay/work
        mount -t overlay overlay -o lowerdir=/host,upperdir=/overlay/upper,workdir=/overlay/work /newroot
        umount /dev/pts /tmp /run /dev /sys /proc
        echo "CTRKERNEL-SWITCH-ROOT"
        exec switch_root /newroot /sbin/init
    fi
    # So that `chroot /host CMD` works: kernel filesystems and writable scratch space over the
    # read-only host tree (mount points in a read-only filesystem are fine).
    for fs in proc:proc sysfs:sys devtmpfs:dev tmpfs:run; do
        mount -t "${fs%%:*}" "${fs%%:*}" "/host/${fs##*:}" 2>/dev/null
    done
    # /tmp and /root become writable without hiding what the host has there (a checkout in
    # /tmp or /root must stay visible): an overlay whose writes stay in the guest's memory.
    for d in tmp root; do
        mkdir -p "/tmp/.host-$d/upper" "/tmp/.host-$d/work"
        mount -t overlay overlay -o "lowerdir=/host/$d,upperdir=/tmp/.host-$d/upper,workdir=/tmp/.host-$d/work" "/host/$d" 2>/dev/null \
            || mount -t tmpfs tmpfs "/host/$d" 2>/dev/null
    done
    mount -t devpts devpts /host/dev/pts 2>/dev/null
fi
if [ -f /workload.sh ]; then
    echo "CTRKERNEL-BEGIN"
    sh /workload.sh
    echo "CTRKERNEL-EXIT status=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
fi
sync
poweroff -f
"""


def kernel_release(kernel):
    """The release a vmlinuz belongs to, from its name (Debian: /boot/vmlinuz-<release>)."""
    name = Path(kernel).name
    return name.split("-", 1)[1] if name.startswith("vmlinuz-") else os.uname().release


def modules_dir(release):
    return Path("/lib/modules") / release


def resolve_modules(release, wanted=BASE_MODULES):
    """Module files to load, in load order, with their dependencies (from modules.dep).

    modules.dep lines read "path: dep1 dep2 ..." where the last dependency must load first.
    """
    root = modules_dir(release)
    try:
        lines = (root / "modules.dep").read_text().splitlines()
    except OSError:
        return []
    deps = {}
    by_name = {}
    for line in lines:
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[module_name(path)] = path
    order = []

    def visit(path):
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path:
            visit(path)
    return [root / p for p in order]


def module_name(path):
    base = Path(path).name
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.replace("-", "_")


def module_bytes(path):
    """A module's ELF bytes: busybox insmod loads plain .ko files, so decompress here."""
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        import gzip
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def find_busybox():
    path = shutil.which("busybox")
    if not path:
        raise HostLacks("building a VM's initramfs", "busybox",
                        "apt-get install busybox-static")
    return Path(path)


def busybox_applets(busybox):
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted(set(out.stdout.split()))


def build_base(kernel, modules=BASE_MODULES):
    """The cached base archive for `kernel`; returns its path (rebuilt when inputs change)."""
    busybox = find_busybox()
    release = kernel_release(kernel)
    module_files = resolve_modules(release, modules)
    key = hashlib.sha256()
    writer_code = Path(__file__).with_name("cpio.py").read_text()
    for part in (INIT, writer_code, str(busybox.stat().st_size), str(busybox.stat().st_mtime_ns), release,
                 *map(str, module_files)):
        key.update(part.encode() + b"\0")
    target = paths.subdir("vm", "initramfs") / f"base-{key.hexdigest()[:16]}.cpio"
    if target.exists():
        return target
    archive = CpioWriter()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root",
              "host", "etc/ctrkernel", "lib/modules", "www"):
        archive.add_dir(d)
    archive.add_char_device("dev/console", 5, 1)
    archive.add_char_device("dev/null", 1, 3, 0o666)
    archive.add_host_file("bin/busybox", busybox, 0o755)
    for applet in busybox_applets(busybox):
        if applet != "busybox":
            archive.add_symlink(f"bin/{applet}", "busybox")
    archive.add_file("init", INIT, 0o755)
    names = []
    for path in module_files:
        name = module_name(path)
        archive.add_file(f"lib/modules/{name}.ko", module_bytes(path))
        names.append(name)
    archive.add_file("etc/modules.load", "".join(n + "\n" for n in names))
    archive.add_file("etc/hostname", "ctrkernel-vm\n")
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    archive.write(tmp)
    os.replace(tmp, target)  # atomic: a concurrent builder never sees half an archive
    return target


def boot_archive(env=None, workload=None, files=None):
    """The per-boot archive: boot.env, the workload script, and any extra {path: bytes}."""
    archive = CpioWriter()
    lines = "".join(f"export {k}={_quote(v)}\n" for k, v in (env or {}).items())
    archive.add_file("etc/ctrkernel/boot.env", lines)
    if workload is not None:
        archive.add_file("workload.sh", workload, 0o755)
    for name, data in (files or {}).items():
        archive.add_file(name, data)
    return archive.bytes()


def _quote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


def build(kernel, directory, env=None, workload=None, files=None):
    """Write base + per-boot archive into `directory`; returns the initramfs path."""
    base = build_base(kernel)
    target = Path(directory) / "initramfs.cpio"
    with open(target, "wb") as out:
        out.write(base.read_bytes())
        out.write(boot_archive(env, workload, files))
    return target


def sizes(kernel):
    """Bytes of what a minimal VM boots from: kernel, base initramfs, and modules inside it."""
    base = build_base(kernel)
    return {"kernel": Path(kernel).stat().st_size, "initramfs": base.stat().st_size}


__all__ = ["build", "build_base", "boot_archive", "resolve_modules", "READY", "BEGIN", "EXIT",
           "VMError"]
