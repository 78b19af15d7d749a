"""The few Linux system calls Python's standard library does not wrap, through ctypes.

Kept in one place so that every caller gets the same errno handling: a failed call raises
OSError with the real errno, exactly as os.* functions do.
"""
import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)

# Namespace flags from <linux/sched.h>.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS = {
    "mnt": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
}

# mount(2) flags from <sys/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYSCALLS = {
    # name: (x86_64, aarch64)
    "pivot_root": (155, 41),
    "setns": (308, 268),
    "capget": (125, 90),
    "capset": (126, 91),
}
_ARCH = 1 if platform.machine() in ("aarch64", "arm64") else 0


def _check(result, *what):
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)} ({' '.join(str(w) for w in what)})")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source, target, fstype, flags=0, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    result = _libc.mount(
        enc(source), enc(str(target)), enc(fstype), ctypes.c_ulong(flags), enc(data)
    )
    _check(result, "mount", fstype or "", source or "", "on", target)


def umount2(target, flags=0) -> None:
    _check(_libc.umount2(str(target).encode(), ctypes.c_int(flags)), "umount", target)


def pivot_root(new_root, put_old) -> None:
    number = _SYSCALLS["pivot_root"][_ARCH]
    _check(_libc.syscall(number, str(new_root).encode(), str(put_old).encode()), "pivot_root")


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0) -> int:
    args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
    return _check(_libc.prctl(ctypes.c_int(option), *args), "prctl", option)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i, shift in enumerate((0, 32)):
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    number = _SYSCALLS["capset"][_ARCH]
    _check(_libc.syscall(number, ctypes.byref(header), ctypes.byref(data)), "capset")
