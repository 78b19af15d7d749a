"""The host probe's worker: tries each feature for real and prints the results as JSON.

It runs as its own short-lived process (`python -m ctrkernel._probe`), never inside the caller:
a notebook kernel has threads, and forking a threaded process to call unshare() is asking for
trouble. Here each check runs in a forked child of this single-threaded worker, so a check that
changes namespaces, mounts or hostnames changes nothing the caller can see, and a check that
hangs is killed by its alarm.
"""
import errno
import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from ctrkernel import _libc
from ctrkernel._libc import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS,
                             CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS)

CHECK_TIMEOUT = 10  # seconds; every check is a handful of syscalls, so this only stops a hang


class Context:
    """What every check needs to know: a scratch directory, and how to get privileges."""

    def __init__(self, scratch, use_userns):
        self.scratch = scratch
        self.use_userns = use_userns  # not root: try namespaces from inside a user namespace

    def privileged(self):
        """Enter a user namespace first when not root; returns the words for the detail."""
        if self.use_userns:
            enter_userns()
            return " (inside a user namespace)"
        return ""


def enter_userns():
    """unshare a user namespace in which we are root, mapped to our own uid and gid."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        _libc.unshare(CLONE_NEWUSER)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OSError(e.errno, "user namespaces are disabled here (max_user_namespaces is 0)")
        if e.errno == errno.EPERM:
            raise OSError(e.errno, "creating a user namespace is not permitted here")
        raise
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")  # required before an unprivileged process may write gid_map
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def private_mounts():
    """A new mount namespace whose mounts do not propagate back to the host."""
    _libc.unshare(CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)


def run_isolated(fn, ctx):
    """Run fn(ctx) in a forked child; return [ok, detail, data]. Its changes die with it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        signal.alarm(CHECK_TIMEOUT)
        data = None
        try:
            ok, detail, *extra = fn(ctx)
            data = extra[0] if extra else None
        except OSError as e:
            ok, detail = False, f"{e.strerror or e}" + (f" [{errno.errorcode.get(e.errno, e.errno)}]" if e.errno else "")
        except Exception as e:  # a check must report, never crash the probe
            ok, detail = False, f"{type(e).__name__}: {e}"
        os.write(w, json.dumps([bool(ok), str(detail), data]).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return False, f"the check died ({describe_status(status)})", None
    return json.loads(b"".join(chunks))


def describe_status(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return "timed out" if sig == signal.SIGALRM else f"killed by signal {sig}"
    return f"exit {os.WEXITSTATUS(status)}"


# ---------------------------------------------------------------- the checks, one a function


def check_root(ctx):
    cap_eff = int(read_status_field("CapEff"), 16)
    has_admin = bool(cap_eff & (1 << 21))  # CAP_SYS_ADMIN
    if os.geteuid() == 0 and has_admin:
        return True, "uid 0 with CAP_SYS_ADMIN"
    return False, f"uid {os.geteuid()}" + ("" if has_admin else ", no CAP_SYS_ADMIN")


def check_userns(ctx):
    enter_userns()
    return True, f"uid {os.geteuid()} inside maps to {ctx_uid()} outside"


def ctx_uid():
    return os.environ.get("CTRKERNEL_PROBE_UID", "?")


def check_userns_mount(ctx):
    enter_userns()
    private_mounts()
    _libc.mount("tmpfs", ctx.scratch, "tmpfs", 0, "size=1m")
    return True, "mount namespace and tmpfs inside a user namespace"


def check_mountns(ctx):
    how = ctx.privileged()
    private_mounts()
    _libc.mount("tmpfs", ctx.scratch, "tmpfs", 0, "size=1m")
    return True, "private mounts" + how


def check_pidns(ctx):
    how = ctx.privileged()
    _libc.unshare(CLONE_NEWPID | CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    pid = os.fork()  # the first child in a new PID namespace is its PID 1
    if pid == 0:
        try:
            _libc.mount("proc", "/proc", "proc", _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC)
            visible = [p for p in os.listdir("/proc") if p.isdigit()]
            os._exit(0 if os.getpid() == 1 and visible == ["1"] else 1)
        except OSError:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return True, "PID 1 with a fresh /proc showing only itself" + how
    if code == 2:
        return False, "PID namespace works but mounting a fresh /proc failed" + how
    return False, "a fresh /proc showed other processes" + how


def check_utsns(ctx):
    how = ctx.privileged()
    _libc.unshare(CLONE_NEWUTS)
    _libc.sethostname("ctrkernel-probe")
    return socket.gethostname() == "ctrkernel-probe", "own hostname" + how


def check_ipcns(ctx):
    how = ctx.privileged()
    _libc.unshare(CLONE_NEWIPC)
    return True, "own System V IPC and POSIX message queues" + how


def check_netns(ctx):
    how = ctx.privileged()
    _libc.unshare(CLONE_NEWNET)
    names = [name for _, name in socket.if_nameindex()]
    return names == ["lo"], f"interfaces inside: {', '.join(names)}" + how


def check_cgroupns(ctx):
    how = ctx.privileged()
    _libc.unshare(CLONE_NEWCGROUP)
    with open("/proc/self/cgroup") as f:
        paths = {line.rstrip("\n").split(":", 2)[2] for line in f}
    return paths == {"/"}, "own cgroup root" + how


def check_pivot_root(ctx):
    how = ctx.privileged()
    private_mounts()
    new_root = ctx.scratch
    _libc.mount("tmpfs", new_root, "tmpfs", 0, "size=1m")
    os.mkdir(os.path.join(new_root, "old"))
    _libc.pivot_root(new_root, os.path.join(new_root, "old"))
    os.chdir("/")
    _libc.umount2("/old", _libc.MNT_DETACH)
    return os.listdir("/old") == [], "new root, old root detached" + how


def try_overlay(ctx):
    private_mounts()
    _libc.mount("tmpfs", ctx.scratch, "tmpfs", 0, "size=4m")
    parts = {n: os.path.join(ctx.scratch, n) for n in ("lower", "upper", "work", "merged")}
    for path in parts.values():
        os.mkdir(path)
    with open(os.path.join(parts["lower"], "image-file"), "w") as f:
        f.write("from the image")
    options = f"lowerdir={parts['lower']},upperdir={parts['upper']},workdir={parts['work']}"
    _libc.mount("overlay", parts["merged"], "overlay", 0, options)
    with open(os.path.join(parts["merged"], "container-file"), "w") as f:
        f.write("written in the container")
    layered = os.listdir(parts["merged"])
    upper = os.listdir(parts["upper"])
    ok = sorted(layered) == ["container-file", "image-file"] and upper == ["container-file"]
    return ok, "writes land in the upper layer, the lower one stays untouched"


def check_overlayfs(ctx):
    how = ctx.privileged()
    ok, detail = try_overlay(ctx)
    return ok, detail + how


def check_overlayfs_userns(ctx):
    enter_userns()
    ok, detail = try_overlay(ctx)
    return ok, detail + " (inside a user namespace)"


def check_fuse_overlayfs(ctx):
    binary = shutil.which("fuse-overlayfs")
    if not binary:
        return False, "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return False, f"{binary} is installed but /dev/fuse cannot be opened: {e.strerror}"
    return True, binary


def read_status_field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return "0"


def check_no_new_privs(ctx):
    # ok means "privileges can still be gained" (setuid binaries work); Binder sets this flag.
    flag = _libc.prctl(_libc.PR_GET_NO_NEW_PRIVS)
    return flag == 0, "no_new_privs is set: setuid programs cannot gain privileges" if flag else "not set"


def check_cgroups(ctx):
    info = cgroup_layout()
    detail = (f"{info['version']}; driver {info['driver']}; writable: "
              f"{', '.join(info['writable']) or 'none'}")
    return info["driver"] != "none", detail, info


def cgroup_layout():
    """Which cgroup hierarchies are mounted, which controllers we can create groups in."""
    v1, v2 = {}, None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            mountpoint, fstype = fields[4], rfields[0]
            if fstype == "cgroup2" and v2 is None:
                v2 = mountpoint
            elif fstype == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in ("memory", "cpu", "cpuacct", "pids", "freezer", "blkio", "cpuset", "devices"):
                        v1.setdefault(opt, mountpoint)
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    writable_v1 = [c for c, mnt in sorted(v1.items()) if can_create_group(mnt, own.get(c, "/"))]
    v2_controllers, writable_v2 = [], []
    if v2:
        group = os.path.join(v2, own.get("", "/").lstrip("/"))
        try:
            with open(os.path.join(group, "cgroup.controllers")) as f:
                v2_controllers = f.read().split()
        except OSError:
            pass
        if v2_controllers and can_create_group(v2, own.get("", "/")):
            writable_v2 = v2_controllers
    if v1 and v2:
        version = "hybrid"
    elif v1:
        version = "v1"
    elif v2:
        version = "v2"
    else:
        version = "none"
    needed = {"memory", "pids"}
    if needed <= set(writable_v2):
        driver, writable = "v2", writable_v2
    elif needed <= set(writable_v1):
        driver, writable = "v1", writable_v1
    else:
        driver, writable = "none", []
    return {"version": version, "driver": driver, "writable": writable,
            "v1_mounts": v1, "v2_mount": v2, "v2_controllers": v2_controllers,
            "v2_group": own.get("", "/")}


def can_create_group(mountpoint, own_path):
    probe = os.path.join(mountpoint, own_path.lstrip("/"), f"ctrkernel-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def check_busybox(ctx):
    path = shutil.which("busybox") or ("/bin/busybox" if os.path.exists("/bin/busybox") else None)
    if not path:
        return False, "busybox is not installed (apt-get install busybox-static)"
    kind = "static" if is_static_elf(path) else "dynamic (install busybox-static for images)"
    first = subprocess.run([path], capture_output=True, text=True).stdout.splitlines()[:1]
    return True, f"{path}, {kind}: {first[0] if first else ''}"


def is_static_elf(path):
    """An ELF file without a PT_INTERP program header needs no dynamic loader."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def check_qemu(ctx):
    path = shutil.which("qemu-system-x86_64")
    if not path:
        return False, "QEMU is not installed (apt-get install qemu-system-x86)"
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return True, f"{path}: {out.splitlines()[0] if out else ''}"


def check_kvm(ctx):
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"/dev/kvm: {e.strerror}; VMs run under software emulation"
    try:
        version = fcntl.ioctl(fd, 0xAE00)  # KVM_GET_API_VERSION
    finally:
        os.close(fd)
    return True, (f"/dev/kvm opens (API {version}); whether guests really boot under it is "
                  "found by ctrkernel.vm with a bounded trial boot")


def check_vm_kernel(ctx):
    kernels = sorted(k for k in glob.glob("/boot/vmlinuz-*") if os.access(k, os.R_OK))
    if not kernels:
        return False, "no readable /boot/vmlinuz-* (apt-get install linux-image-cloud-amd64)"
    return True, ", ".join(kernels)


# What a VM disk image needs (ctrkernel/vm/disk.py), and the Debian package each comes from.
VM_DISK_TOOLS = {"mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "qemu-img": "qemu-utils"}


def tool_path(tool):
    # mke2fs and debugfs live in /sbin, which an unprivileged user's PATH may not include
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(tool, path=path)


def check_vm_disk(ctx):
    missing = [tool for tool in VM_DISK_TOOLS if not tool_path(tool)]
    if missing:
        packages = " ".join(sorted({VM_DISK_TOOLS[t] for t in missing}))
        return False, f"{', '.join(missing)} not installed (apt-get install {packages})", \
            {"missing": missing}
    return True, ", ".join(tool_path(tool) for tool in VM_DISK_TOOLS), {"missing": []}


def check_cc(ctx):
    path = shutil.which("cc") or shutil.which("gcc")
    return bool(path), path or "no C compiler (apt-get install gcc)"


def check_proot(ctx):
    path = shutil.which("proot")
    return bool(path), path or "proot is not installed (apt-get install proot)"


CHECKS = [
    ("root", check_root),
    ("userns", check_userns),
    ("userns_mount", check_userns_mount),
    ("mountns", check_mountns),
    ("pidns", check_pidns),
    ("utsns", check_utsns),
    ("ipcns", check_ipcns),
    ("netns", check_netns),
    ("cgroupns", check_cgroupns),
    ("pivot_root", check_pivot_root),
    ("overlayfs", check_overlayfs),
    ("overlayfs_userns", check_overlayfs_userns),
    ("fuse_overlayfs", check_fuse_overlayfs),
    ("cgroups", check_cgroups),
    ("no_new_privs", check_no_new_privs),
    ("busybox", check_busybox),
    ("qemu", check_qemu),
    ("kvm", check_kvm),
    ("vm_kernel", check_vm_kernel),
    ("vm_disk", check_vm_disk),
    ("cc", check_cc),
    ("proot", check_proot),
]


def main():
    os.environ["CTRKERNEL_PROBE_UID"] = str(os.geteuid())
    scratch = tempfile.mkdtemp(prefix="ctrkernel-probe-")
    try:
        ok_root = run_isolated(check_root, Context(scratch, False))[0]
        ctx = Context(scratch, use_userns=not ok_root)
        results = []
        for name, fn in CHECKS:
            ok, detail, data = run_isolated(fn, ctx)
            entry = {"name": name, "ok": ok, "detail": detail}
            if data is not None:
                entry["data"] = data
            results.append(entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
