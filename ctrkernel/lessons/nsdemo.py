"""One namespace at a time, for chapter 02: what changes inside, and what stays the same outside.

    from ctrkernel.lessons.nsdemo import alone, holding, ps_sees_only_itself
    alone("uts")      # a child with only a new UTS namespace sets its hostname; ours is unchanged
    alone("uts", hostname="box")
    with holding("uts", hostname="box") as pid:   # a live process to inspect from outside:
        os.readlink(f"/proc/{pid}/ns/uts")        # differs from /proc/self/ns/uts; nsenter works
    ps_sees_only_itself("pid", "mnt")             # which namespaces make `ps` see so little

Each demo runs in a fresh worker process (`python -m ctrkernel.lessons.nsdemo KIND`), never in
the notebook kernel itself: the kernel has threads, and a namespace entered by unshare() would
stay with it. The worker reports what it saw inside as JSON; this side adds what the host sees.
As root the worker unshares directly; rootless it first enters a user namespace (the only one
an unprivileged user may create); where neither works, `alone` raises HostLacks saying why.
"""
import contextlib
import html
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile

from ctrkernel import _libc
from ctrkernel.errors import CtrkernelError

KINDS = ("uts", "pid", "mnt", "net", "ipc", "user", "cgroup")
WHAT_IT_ISOLATES = {
    "uts": "the hostname (and NIS domain name)",
    "pid": "process IDs: the first process is PID 1 and sees only its descendants",
    "mnt": "the mount table: mounts made inside are invisible outside",
    "net": "network interfaces, addresses, routes, ports",
    "ipc": "System V IPC objects and POSIX message queues",
    "user": "user and group IDs: root inside can be an ordinary user outside",
    "cgroup": "the view of the cgroup tree: its own cgroup looks like the root",
}
PROBE_CHECK = {"uts": "utsns", "pid": "pidns", "mnt": "mountns", "net": "netns", "ipc": "ipcns",
               "user": "userns", "cgroup": "cgroupns"}
DEFAULT_HOSTNAME = "container"
HOST_NAME_MAX = 64  # the kernel's limit for sethostname(), in bytes
READY_TIMEOUT = 60  # seconds a worker may take to enter its namespace and say so


def _check_request(kind, hostname):
    """Validate the arguments here, so a learner gets one clear error, not a worker traceback."""
    if kind not in KINDS:
        raise CtrkernelError(f"unknown namespace {kind!r}; choose one of {', '.join(KINDS)}")
    if hostname is None:
        return DEFAULT_HOSTNAME if kind == "uts" else None
    if kind != "uts":
        raise CtrkernelError(f"hostname= only applies to the uts namespace, not {kind!r}")
    if not isinstance(hostname, str) or not hostname or "\0" in hostname \
            or len(hostname.encode()) > HOST_NAME_MAX:
        raise CtrkernelError(f"hostname must be 1 to {HOST_NAME_MAX} bytes with no NUL, "
                             f"got {hostname!r}")
    return hostname


def ns_inode(kind, pid="self"):
    """The namespace's identity: two processes share a namespace when these inodes are equal."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def host_view(kind):
    """What the calling process sees of the thing `kind` isolates."""
    if kind == "uts":
        return socket.gethostname()
    if kind == "pid":
        return f"{sum(p.isdigit() for p in os.listdir('/proc'))} processes visible"
    if kind == "net":
        return ", ".join(name for _, name in socket.if_nameindex())
    if kind == "user":
        return f"uid {os.geteuid()}"
    if kind == "cgroup":
        with open("/proc/self/cgroup") as f:
            return f.readline().strip().split(":", 2)[2]
    return "the host's set of IPC objects"


class Demo:
    """What one namespace demo saw inside and outside; renders as a small table."""

    def __init__(self, kind, inside, outside, how):
        self.kind, self.inside, self.outside, self.how = kind, inside, outside, how

    @property
    def isolated(self):
        return self.inside["ns_inode"] != self.outside["ns_inode"]

    def _rows(self):
        return [("namespace inode", self.inside["ns_inode"], self.outside["ns_inode"]),
                ("what it isolates", self.inside["view"], self.outside["view"])]

    def __repr__(self):
        lines = [f"{self.kind} namespace alone{self.how}: {WHAT_IT_ISOLATES[self.kind]}"]
        lines += [f"  {name:<17} inside: {i!s:<28} outside: {o}" for name, i, o in self._rows()]
        return "\n".join(lines)

    def _repr_html_(self):
        e = html.escape
        rows = "".join(f"<tr><td>{e(n)}</td><td>{e(str(i))}</td><td>{e(str(o))}</td></tr>"
                       for n, i, o in self._rows())
        return (f"<p><b>{e(self.kind)}</b> namespace alone{e(self.how)}: "
                f"{e(WHAT_IT_ISOLATES[self.kind])}</p><table><tr><th></th><th>inside</th>"
                f"<th>outside (this notebook)</th></tr>{rows}</table>")


def alone(kind, hostname=None):
    """Run a child in a new `kind` namespace only (plus a user namespace when not root).

    For "uts" the child sets `hostname` (default "container") inside its namespace.
    """
    from ctrkernel.host import doctor

    hostname = _check_request(kind, hostname)
    report = doctor()
    report.require(PROBE_CHECK[kind], f"a demo of the {kind} namespace")
    rootless = not report.ok("root")
    done = subprocess.run([sys.executable, "-m", "ctrkernel.lessons.nsdemo", kind]
                          + ([hostname] if hostname else []),
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise CtrkernelError(f"the {kind} demo failed: {done.stderr.strip()[-500:]}")
    inside = json.loads(done.stdout)
    outside = {"ns_inode": ns_inode(kind), "view": host_view(kind)}
    if kind == "mnt":
        outside["view"] = ("the tmpfs is not a mount here" if not os.path.ismount(inside["dir"])
                           else "the tmpfs is visible here!")
    how = " (inside a user namespace, as you are not root)" if rootless and kind != "user" else ""
    return Demo(kind, inside, outside, how)


@contextlib.contextmanager
def holding(kind, hostname=None):
    """Keep a process in a new `kind` namespace alive for the `with` block; yield its PID.

    The PID is the host's number for the process that is in the namespace, so the learner can
    look at /proc/<pid>/ns/<kind> from outside, or enter it with nsenter. For "pid" that is the
    namespace's PID 1 (the caller of unshare stays outside; its child is the one inside).
    On leaving the block the process is killed and reaped: no process and no zombie remain.
    """
    from ctrkernel.host import doctor

    hostname = _check_request(kind, hostname)
    doctor().require(PROBE_CHECK[kind], f"holding a {kind} namespace open")
    # The worker waits for EOF on its stdin: closing our end (or our death, which closes it
    # too) is what ends it, so even a crashed notebook kernel leaves nothing behind.
    proc = subprocess.Popen([sys.executable, "-m", "ctrkernel.lessons.nsdemo", "hold", kind]
                            + ([hostname] if hostname else []),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if not line:
            why = _release(proc).strip()[-500:] or f"no answer within {READY_TIMEOUT} s"
            raise CtrkernelError(f"could not hold a {kind} namespace: {why}")
        pid = json.loads(line)["pid"]
        yield pid
    finally:
        _release(proc)


def _release(proc):
    """End a holding worker and reap it (it reaps its own child first); return its stderr."""
    with contextlib.suppress(OSError):
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a worker stuck in the kernel: no more politeness
        proc.kill()
        proc.wait()
    errors = ""
    if not proc.stderr.closed:
        errors = proc.stderr.read()  # the worker has exited: this cannot block
    for f in (proc.stdout, proc.stderr):
        f.close()
    return errors


PS_SETUPS = {("pid",): "a PID namespace, still reading the host's /proc",
             ("mnt",): "a mount table of its own, still in our PID namespace",
             ("mnt", "pid"): "a PID namespace and a fresh /proc in its own mount namespace"}


def ps_sees_only_itself(*kinds):
    """Does `ps` in a child given only these namespaces ("pid", "mnt" or both) see only itself?

    Runs the real experiment in a worker: the child lists /proc, as ps does, and answers True
    when the only process it finds is itself. Raises HostLacks where a namespace is missing.
    """
    from ctrkernel.host import doctor

    setup = tuple(sorted(set(kinds)))
    if setup not in PS_SETUPS:
        raise CtrkernelError(f"choose 'pid', 'mnt' or both, not {kinds!r}")
    report = doctor()
    for kind in setup:
        report.require(PROBE_CHECK[kind], f"the ps experiment with a {kind} namespace")
    done = subprocess.run([sys.executable, "-m", "ctrkernel.lessons.nsdemo", "ps", *setup],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise CtrkernelError(f"the ps experiment failed: {done.stderr.strip()[-500:]}")
    seen = json.loads(done.stdout)
    return seen["pids"] == [seen["me"]]


def escape_attempt(how):
    """Try the classic chroot escape from a new root made with `how` ("chroot" or "pivot_root").

    Returns what the escaped process lists at "/": the host's top-level directories if it got
    out, the jail's own if it did not. Runs in a worker with a private mount namespace, so the
    host is never touched either way.
    """
    from ctrkernel.host import doctor

    if how not in ("chroot", "pivot_root"):
        raise CtrkernelError("how must be 'chroot' or 'pivot_root'")
    doctor().require("pivot_root" if how == "pivot_root" else "mountns", f"the {how} escape demo")
    done = subprocess.run([sys.executable, "-m", "ctrkernel.lessons.nsdemo", f"escape-{how}"],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise CtrkernelError(f"the {how} demo failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def _escape_worker(how):
    from ctrkernel._probe import enter_userns

    if os.geteuid() != 0:
        enter_userns()  # CAP_SYS_CHROOT and CAP_SYS_ADMIN, but only over our own namespaces
    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    # The jail is a tmpfs over /tmp in our private mount table: nothing is created on the host.
    jail = "/tmp"
    _libc.mount("tmpfs", jail, "tmpfs", 0, "size=1m")
    for name in ("bin", "etc", "inside-the-jail"):
        os.mkdir(os.path.join(jail, name))
    if how == "chroot":
        os.chroot(jail)
        os.chdir("/")
    else:
        os.mkdir(os.path.join(jail, "old-root"))
        _libc.pivot_root(jail, os.path.join(jail, "old-root"))
        os.chdir("/")
        _libc.umount2("/old-root", _libc.MNT_DETACH)  # the host's tree leaves our mount table
        os.rmdir("/old-root")
    jailed_view = sorted(os.listdir("/"))
    # The escape: chroot into a subdirectory without moving there, so our working directory is
    # now *above* our root; walk up past it, and make wherever we end up our root.
    os.mkdir("/x")
    os.chroot("/x")
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    json.dump({"how": how, "jail": jailed_view, "after_escape": sorted(os.listdir("/")),
               "escaped": sorted(os.listdir("/")) != jailed_view + ["x"]}, sys.stdout)


# ------------------------------------------------------------------ the worker process


def _enter(kind):
    """unshare `kind` (after a user namespace when we are not root)."""
    from ctrkernel._probe import enter_userns

    if os.geteuid() != 0 or kind == "user":
        enter_userns()
    if kind != "user":
        _libc.unshare(_libc.NAMESPACE_FLAGS[kind])


def _worker(kind, hostname=None):
    _enter(kind)
    result = {"ns_inode": ns_inode(kind)}
    if kind == "uts":
        _libc.sethostname(hostname or DEFAULT_HOSTNAME)
        result["view"] = socket.gethostname()
    elif kind == "pid":
        # The caller of unshare(CLONE_NEWPID) stays where it was; its next child is PID 1.
        # That child mounts a fresh /proc (in a private mount table, or it would replace ours).
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            _libc.unshare(_libc.CLONE_NEWNS)
            _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
            _libc.mount("proc", "/proc", "proc", 0)
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            os.write(w, json.dumps({"pid": os.getpid(), "pids": pids,
                                    "ns_inode": ns_inode("pid")}).encode())
            os._exit(0)
        os.close(w)
        seen = json.loads(os.read(r, 65536))
        os.waitpid(child, 0)
        result.update(ns_inode=seen["ns_inode"],
                      view=f"I am PID {seen['pid']}; visible: {seen['pids']}")
    elif kind == "mnt":
        _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
        scratch = tempfile.mkdtemp(prefix="nsdemo-")
        _libc.mount("tmpfs", scratch, "tmpfs", 0, "size=1m")
        with open(os.path.join(scratch, "hello"), "w") as f:
            f.write("only visible in here")
        result.update(dir=scratch, view=f"a tmpfs mounted at {scratch}: {os.listdir(scratch)}")
        _libc.umount2(scratch)
        os.rmdir(scratch)
    elif kind == "ipc":
        result["view"] = "its own (empty) set of IPC objects"
    else:
        result["view"] = host_view(kind)
    json.dump(result, sys.stdout)


def _hold_worker(kind, hostname=None):
    """Enter `kind`, report the PID that is inside, and wait for EOF on stdin; then clean up."""
    # An interrupt meant for the notebook kernel must not kill us before we reap our child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _enter(kind)
    if kind == "uts":
        _libc.sethostname(hostname or DEFAULT_HOSTNAME)
    inside, child = os.getpid(), None
    if kind == "pid":
        # unshare(CLONE_NEWPID) moved only our future children: the first one is PID 1 there.
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(w)
            os.read(r, 1)  # returns when the worker is gone, however it went
            os._exit(0)
        os.close(r)
        inside = child
    print(json.dumps({"pid": inside}), flush=True)
    sys.stdin.read()
    if child:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def _ps_worker(kinds):
    """The ps experiment: a child lists /proc as ps does and reports the PIDs and its own."""
    from ctrkernel._probe import enter_userns

    if os.geteuid() != 0:
        enter_userns()
    if "pid" in kinds:
        _libc.unshare(_libc.CLONE_NEWPID)
    r, w = os.pipe()
    child = os.fork()  # in the new PID namespace, if there is one
    if child == 0:
        os.close(r)
        if "mnt" in kinds:
            _libc.unshare(_libc.CLONE_NEWNS)
            _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
            # A fresh /proc shows the PID namespace of whoever mounts it, so only with a new
            # PID namespace is there anything new to show. Without one we keep the copy of our
            # /proc (rootless the kernel would refuse a new one anyway: it would show a PID
            # namespace we do not own), so the experiment is the same as root and rootless.
            if "pid" in kinds:
                _libc.mount("proc", "/proc", "proc", 0)
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        os.write(w, json.dumps({"pids": pids, "me": os.getpid()}).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.waitpid(child, 0)
    sys.stdout.write(b"".join(chunks).decode())


if __name__ == "__main__":
    if sys.argv[1].startswith("escape-"):
        _escape_worker(sys.argv[1][len("escape-"):])
    elif sys.argv[1] == "hold":
        _hold_worker(*sys.argv[2:4])
    elif sys.argv[1] == "ps":
        _ps_worker(sys.argv[2:])
    else:
        _worker(*sys.argv[1:3])
