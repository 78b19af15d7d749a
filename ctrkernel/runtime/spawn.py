"""The process chain that starts a container. No Python process is kept per container.

    caller (a notebook kernel, the CLI)
      └─ C1: setsid, forks A, exits          (so the container is never the caller's child)
          └─ A: unshares user (rootless), UTS, IPC, net, PID namespaces, forks B,
              │  then execs the C shim, which waits for B and relays published ports
              └─ B: PID 1 of the new PID namespace. Unshares its own mount namespace (so A's
                    root is untouched), assembles the root filesystem, joins the cgroup,
                    pivot_roots, drops privileges, execs the command.

The caller learns A's and B's pids through one pipe, and how the exec went through another
that is close-on-exec in B: end of file means the command is running, bytes are an error
("127 message").

`launch_native` has the C shim build this chain (`shim run PLAN`, spawned with posix_spawn:
nothing of the caller's memory is copied, no Python runs in the container's processes, and a
notebook kernel's threads are no concern); there the caller also puts B in its cgroup before
B may exec. `launch` builds the same chain in Python with fork, for hosts without a C
compiler and for the no-namespace (proot) mode. Forked children call only syscalls and never
return into the caller's code.
"""
import errno
import fcntl
import os
import shutil
import signal
import socket
import struct
import time
import traceback

from ctrkernel import _libc
from ctrkernel.errors import CommandNotFound, CommandNotInvocable, CtrkernelError
from ctrkernel.runtime import rootfs, security

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def launch_native(plan, cgroup, listeners, plan_path, on_pids=None):
    """The same chain, built by the C shim (`shim run PLAN`): spawned with posix_spawn, so the
    caller's memory is never copied, and no Python runs in the container's processes.

    on_pids({"shim": pid, "init": pid}) is called as soon as the pids are known, before the
    command is exec'd: the caller records them, so that if it dies in the meantime, `prune`
    can find and kill the chain."""
    uid, gid, extra = security.resolve_user(plan["user"], layers=plan["layers"])
    records = [("rootfs_kind", plan["rootfs_kind"]), ("rootfs", plan["rootfs"]),
               ("lower", ":".join(reversed(plan["layers"]))), ("upper", plan["upper"]),
               ("work", plan["work"]), ("userns", "1" if plan["userns"] else "0"),
               ("hostname", plan["hostname"]), ("stdout", plan["stdout_path"]),
               ("stderr", plan["stderr_path"]), ("status", plan["status_path"]),
               ("workdir", plan["workdir"] or "/"), ("uid", uid), ("gid", gid),
               ("capmask", f"{security.DEFAULT_MASK:x}"), ("lastcap", security.last_cap()),
               ("fuse", shutil.which("fuse-overlayfs") or "fuse-overlayfs")]
    records += [("ns", ns) for ns in plan["namespaces"]]
    records += [("group", g) for g in extra]
    records += [("arg", a) for a in plan["argv"]]
    records += [("env", f"{k}={v}") for k, v in plan["env"].items()]
    limits = getattr(cgroup, "rlimits", None)
    for res, (soft, hard) in (limits if isinstance(limits, list) else []):
        records.append(("rlimit", f"{res} {_rlim(soft)} {_rlim(hard)}"))
    records += [("port", f"{6 + i}:{port}") for i, port in enumerate(plan["port_targets"])]
    with open(plan_path, "wb") as f:
        f.write(b"".join(f"{k}={v}".encode() + b"\0" for k, v in records))

    info_r, info_w = os.pipe()
    err_r, err_w = os.pipe()
    go_r, go_w = os.pipe()
    # The shim must not hold the caller's stdin/stdout/stderr (a terminal, or the pipe of a
    # `subprocess.run(capture_output=True)` that would then wait for the container's end).
    actions = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    # The shim finds its pipes at 3, 4, 5 and the listeners from 6 on. The dup2s run in order,
    # so a source that already sits in that range (a short script's low fds) would be
    # overwritten before it is copied: copy every source above the range first.
    sources = [info_w, err_w, go_r] + [s.fileno() for s in listeners]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 6 + len(listeners)) for fd in sources]
    actions += [(os.POSIX_SPAWN_DUP2, fd, 3 + i) for i, fd in enumerate(high)]
    try:
        first = os.posix_spawn(plan["shim"], [plan["shim"], "run", plan_path], {},
                               file_actions=actions, setsid=True)
    finally:
        for fd in [info_w, err_w, go_r] + high:
            os.close(fd)
    os.waitpid(first, 0)  # it forks the container's chain and leaves at once
    info = _read_all(info_r).split()
    pids = {"shim": int(info[0]), "init": int(info[1])} if len(info) == 2 else None
    try:
        if pids and on_pids is not None:
            on_pids(pids)  # before anything else can take time (B still waits for "go")
        if pids and cgroup is not None:
            cgroup.add_process(pids["init"])  # before it execs: no moment without limits
        if pids:
            os.write(go_w, b"g")
    finally:
        os.close(go_w)
    return _outcome(plan, pids, _read_all(err_r).decode(errors="replace"))


def _rlim(value):
    return 2 ** 64 - 1 if value in (None, -1) or value == resource_infinity() else int(value)


def resource_infinity():
    import resource
    return resource.RLIM_INFINITY


def launch(plan, cgroup, listeners, on_pids=None):
    """Start the chain; return {"shim": pid, "init": pid}. Raises on setup or exec failure.
    on_pids is called as in launch_native, once A has reported the pids (B may still be
    setting up its root)."""
    info_r, info_w = os.pipe()
    err_r, err_w = os.pipe()
    c1 = os.fork()
    if c1 == 0:
        _child(lambda: _first(plan, cgroup, listeners, info_w, err_w), err_w)
    os.close(info_w)
    os.close(err_w)
    os.waitpid(c1, 0)
    info = _read_all(info_r).split()
    pids = {"shim": int(info[0]), "init": int(info[1])} if len(info) == 2 else None
    if pids and on_pids is not None:
        on_pids(pids)
    error = _read_all(err_r).decode(errors="replace")
    if pids and cgroup is not None:
        cgroup.add_process(pids["init"])  # bookkeeping; B joined its group itself (enter())
    return _outcome(plan, pids, error)


def _outcome(plan, pids, error):
    if error:
        code, _, message = error.partition(" ")
        if code == "127":
            raise CommandNotFound(plan["argv"][0])
        if code == "126":
            raise CommandNotInvocable(plan["argv"][0], message.rpartition(": ")[2])
        raise CtrkernelError(f"container setup failed: {message}")
    if pids is None:
        raise CtrkernelError("container setup failed: its process died without a word")
    return pids


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _child(body, err_w):
    """Run body() in a forked child; never return into the caller's code."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        body()
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - report everything, then die
        code, text = _classify(e)
        try:
            os.write(err_w, f"{code} {text}".encode())
        finally:
            os._exit(code)


def _classify(e):
    if isinstance(e, _ExecFailed):
        return e.code, e.message
    # Name the step that failed (the innermost ctrkernel function), so the error is actionable.

    frames = [f for f in traceback.extract_tb(e.__traceback__) if "ctrkernel" in f.filename]
    where = f" (in {frames[-1].name})" if frames else ""
    if isinstance(e, OSError):
        text = f"{e.strerror or e}: {e.filename}" if e.filename else f"{e}"
        return 125, text + where
    return 125, f"{type(e).__name__}: {e}" + where


class _ExecFailed(Exception):
    def __init__(self, code, message):
        self.code, self.message = code, message


def _first(plan, cgroup, listeners, info_w, err_w):
    os.setsid()
    if os.fork():
        os._exit(0)  # C1 leaves; A is adopted by init (or the nearest subreaper)
    _process_a(plan, cgroup, listeners, info_w, err_w)


def _process_a(plan, cgroup, listeners, info_w, err_w):
    if plan["userns"]:
        uid, gid = os.geteuid(), os.getegid()
        _libc.unshare(_libc.CLONE_NEWUSER)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    flags = 0
    for ns in plan["namespaces"]:
        if ns not in ("mnt", "user", "cgroup"):  # B makes those itself, at the right moment
            flags |= _libc.NAMESPACE_FLAGS[ns]
    if flags:
        _libc.unshare(flags)
    if "net" in plan["namespaces"]:
        _loopback_up()
    if "uts" in plan["namespaces"]:
        _libc.sethostname(plan["hostname"])
    b = os.fork()
    if b == 0:
        # B must not hold the info pipe: the caller reads it to its end to learn the pids,
        # and should learn them now, not only once B has exec'd.
        os.close(info_w)
        _child(lambda: _process_b(plan, cgroup, err_w), err_w)
    os.write(info_w, f"{os.getpid()} {b}\n".encode())
    os.close(info_w)
    os.close(err_w)
    shim = plan.get("shim")
    if shim:
        keep = [s.fileno() for s in listeners]
        for fd in keep:
            os.set_inheritable(fd, True)
        args = [f"{s.fileno()}:{port}" for s, port in zip(listeners, plan["port_targets"])]
        _close_fds(keep)
        _redirect(os.open(os.devnull, os.O_WRONLY), os.open(os.devnull, os.O_WRONLY), os.devnull)
        os.execv(shim, [shim, str(b), plan["status_path"], *args])
    _python_waiter(b, plan["status_path"])


def _python_waiter(child, status_path):
    """What the shim does, in Python: only when no C compiler could build the shim."""
    _close_fds([])
    _redirect(os.open(os.devnull, os.O_WRONLY), os.open(os.devnull, os.O_WRONLY), os.devnull)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    sig = -code if code < 0 else 0
    import json
    tmp = status_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"ExitCode": 128 + sig if sig else code, "Signal": sig,
                   "FinishedAt": time.time()}, f)
    os.replace(tmp, status_path)


def _close_fds(keep):
    top = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536
    low = 3
    for fd in sorted(keep) + [top]:
        if fd >= low:
            os.closerange(low, fd)
        low = max(low, fd + 1)


def _loopback_up():
    """A new network namespace has only `lo`, and it is down: bring it up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def _process_b(plan, cgroup, err_w):
    stdout = os.open(plan["stdout_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    stderr = os.open(plan["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    if plan["mode"] == "proot":
        return _exec_proot(plan, cgroup, stdout, stderr, err_w)
    rootfs.make_private()
    rootfs.mount_root(plan)
    rootfs.mount_system(plan["rootfs"], plan["userns"])
    if cgroup is not None:
        cgroup.enter()  # before pivot_root: the host's /sys/fs/cgroup is still visible here
    rootfs.pivot(plan["rootfs"])
    if "cgroup" in plan["namespaces"]:
        # After joining our group, so that the group becomes the namespace's root "/".
        _libc.unshare(_libc.CLONE_NEWCGROUP)
    uid, gid, extra = security.resolve_user(plan["user"], "/")
    workdir = plan["workdir"] or "/"
    os.makedirs(workdir, exist_ok=True)  # as Docker does for a WORKDIR that does not exist
    os.chdir(workdir)
    security.harden_and_become(uid, gid, extra)
    _redirect(stdout, stderr, "/dev/null")
    _exec(plan["argv"], plan["env"], err_w)


def _redirect(stdout, stderr, devnull):
    null = os.open(devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)


def _exec(argv, env, err_w):
    _close_fds([err_w])
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            where = "" if "/" in argv[0] else " in $PATH"
            message = f"exec: \"{argv[0]}\": executable file not found{where}"
            raise _ExecFailed(127, message) from None
        raise _ExecFailed(126, f"exec: \"{argv[0]}\": {e.strerror}") from None


def _exec_proot(plan, cgroup, stdout, stderr, err_w):
    """No namespaces: run under proot, which fakes the root directory with ptrace."""
    # Its own process group: with no PID namespace, signalling the group is how kill and stop
    # reach proot's tracees too (killing proot alone leaves them running).
    os.setsid()
    if cgroup is not None:
        cgroup.enter()
    # -0: the command sees itself as root (proot fakes it), as in a container.
    argv = [plan["proot"], "-r", plan["rootfs"], "-w", plan["workdir"] or "/", "-b", "/dev",
            "-b", "/proc", "-b", "/sys", "-0", *plan["argv"]]
    env = dict(plan["env"])
    os.makedirs(os.path.join(plan["rootfs"], (plan["workdir"] or "/").lstrip("/")), exist_ok=True)
    _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1)
    _redirect(stdout, stderr, "/dev/null")
    # proot reports a missing command itself (exit 1); check first to exit like Docker.
    if not _find_in_root(plan["rootfs"], plan["argv"][0], env.get("PATH", "")):
        raise _ExecFailed(127, f"exec: \"{plan['argv'][0]}\": executable file not found in $PATH")
    _close_fds([err_w])
    os.execve(plan["proot"], argv, env)


def _find_in_root(root, command, path):
    if "/" in command:
        candidates = [command]
    else:
        candidates = [os.path.join(d, command) for d in path.split(":") if d]
    for c in candidates:
        full = os.path.join(root, c.lstrip("/"))
        if os.path.lexists(full):
            return True
    return False
