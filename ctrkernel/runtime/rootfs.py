"""The container's root filesystem, assembled inside its own mount namespace.

Everything here runs in the container's first process after it unshared its mount namespace,
so no mount is ever visible in the host's /proc/mounts and all of them vanish with the
namespace. Three ways to give the container a writable root over read-only image layers:

- ``overlayfs``: the layers as lowerdirs, a per-container upperdir takes every write;
- ``fuse-overlayfs``: the same in user space, where the kernel refuses overlay (old kernels in
  a user namespace);
- ``copy``: the layers copied once into the container's directory (slow, costs disk; reported).
"""
import os

from ctrkernel import _libc
from ctrkernel._libc import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                             MS_RDONLY, MS_REC, MS_REMOUNT, MS_STRICTATIME)

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def choose_kind(report, rootless):
    """Which writable-root technique this host allows, best first."""
    if report.ok("overlayfs_userns" if rootless else "overlayfs"):
        return "overlayfs"
    if report.ok("fuse_overlayfs"):
        return "fuse-overlayfs"
    return "copy"


def copy_layers(layer_dirs, target):
    """Apply layers lowest first into target, honouring whiteouts and opaque directories in
    both forms (the `copy` fallback). The union is the image store's: one implementation."""
    from ctrkernel.image.extract import union_view
    union_view(layer_dirs, target)


def make_private():
    _libc.unshare(_libc.CLONE_NEWNS)
    # Nothing we mount may propagate back to the host's mount table.
    _libc.mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_root(plan):
    """Mount the writable root at plan['rootfs'] (in our private mount namespace)."""
    kind, merged = plan["rootfs_kind"], plan["rootfs"]
    if kind == "overlayfs":
        lower = ":".join(reversed(plan["layers"]))  # overlay lists the topmost layer first
        options = f"lowerdir={lower},upperdir={plan['upper']},workdir={plan['work']}"
        if plan["userns"]:
            # In a user namespace overlay keeps its whiteout/opaque marks in user.* xattrs.
            try:
                _libc.mount("overlay", merged, "overlay", 0, options + ",userxattr")
                return
            except OSError:
                pass
        _libc.mount("overlay", merged, "overlay", 0, options)
    elif kind == "fuse-overlayfs":
        import subprocess
        lower = ":".join(reversed(plan["layers"]))
        subprocess.run(["fuse-overlayfs", "-o",
                        f"lowerdir={lower},upperdir={plan['upper']},workdir={plan['work']}",
                        merged], check=True, capture_output=True)
    else:
        # pivot_root needs the new root to be a mount point: bind the copy onto itself.
        _libc.mount(merged, merged, None, MS_BIND | MS_REC)


def _ensure_dir(path, mode=0o755):
    if not os.path.isdir(path):
        os.makedirs(path, mode, exist_ok=True)


# Like Docker/runc: the fresh /proc is our PID namespace's, but these entries still reach
# host-wide kernel settings, so they become read-only; the masked ones leak host memory, keys
# or timers and are hidden (files under /dev/null, directories under an empty read-only tmpfs).
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus")
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "sched_debug")
PROC_MASKED_DIRS = ("acpi", "scsi")
_LOCKED = MS_NOSUID | MS_NODEV | MS_NOEXEC


def _harden_mount(userns, *args):
    try:
        _libc.mount(*args)
        return True
    except OSError:
        # In a user namespace the kernel may refuse some of these (locked mounts); its root
        # cannot write host settings anyway (owned by the real root), so skip, don't fail.
        if not userns:
            raise
        return False


def harden_proc(proc, userns):
    for name in PROC_READONLY:
        path = os.path.join(proc, name)
        if os.path.lexists(path) and _harden_mount(userns, path, path, None, MS_BIND | MS_REC):
            _harden_mount(userns, None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _LOCKED)
    for name in PROC_MASKED_FILES:
        path = os.path.join(proc, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            _harden_mount(userns, "/dev/null", path, None, MS_BIND)
    for name in PROC_MASKED_DIRS:
        path = os.path.join(proc, name)
        if os.path.isdir(path):
            _harden_mount(userns, "tmpfs", path, "tmpfs", MS_RDONLY | _LOCKED, "size=0")


def mount_system(root, userns):
    """A fresh /proc (our PID namespace), a read-only /sys and a minimal /dev."""
    proc, sys_, dev = (os.path.join(root, d) for d in ("proc", "sys", "dev"))
    for d in (proc, sys_, dev):
        _ensure_dir(d)
    _libc.mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    harden_proc(proc, userns)
    try:
        _libc.mount("sysfs", sys_, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        # Without our own network namespace (--network host, rootless) the kernel refuses a
        # new sysfs; a read-only view of the host's is the next best thing.
        _libc.mount("/sys", sys_, None, MS_BIND | MS_REC)
        _libc.mount(None, sys_, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
                    | MS_NOEXEC)
    _libc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name in DEVICES:
        node = os.path.join(dev, name)
        open(node, "w").close()
        # mknod is refused in a user namespace; binding the host's nodes works everywhere.
        _libc.mount(f"/dev/{name}", node, None, MS_BIND)
    pts = os.path.join(dev, "pts")
    os.mkdir(pts)
    options = "newinstance,ptmxmode=0666,mode=0620" + ("" if userns else ",gid=5")
    _libc.mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, options)
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm)
    _libc.mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))


def pivot(root):
    """Make `root` the root and detach the old one entirely (not chroot: no way back)."""
    os.chdir(root)
    # pivot_root(".", ".") stacks the old root on top of the new one at "/"; unmounting "."
    # then detaches the old root, with no put_old directory left in the container's files.
    _libc.pivot_root(".", ".")
    _libc.umount2(".", MNT_DETACH)
    os.chdir("/")
