"""`exec`: run another process inside a running container by joining its namespaces.

A forked child joins the container's cgroup, then setns() into each namespace of the
container's PID 1 (user first, so that the others may be joined with its privileges). A PID
namespace applies only to children, so the child forks once more; the grandchild is inside
everything, drops privileges like the container's PID 1 did, and execs.
"""
import os
import selectors

from ctrkernel import _libc
from ctrkernel.runtime import security, spawn

ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt")  # user first, mnt last


def exec_in(init_pid, namespaces, argv, env, workdir, user, cgroup, fake_proot=None):
    """Run argv in the container whose PID 1 is init_pid; return (exit code, out, err)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    fail_r, fail_w = os.pipe()
    fds = {ns: os.open(f"/proc/{init_pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
           for ns in ORDER if ns in namespaces}
    pid = os.fork()
    if pid == 0:
        spawn._child(lambda: _join_and_run(fds, argv, env, workdir, user, cgroup, out_w, err_w,
                                           fail_w, fake_proot), fail_w)
    for fd in (out_w, err_w, fail_w, *fds.values()):
        os.close(fd)
    out, err, fail = _collect({out_r: [], err_r: [], fail_r: []}, out_r, err_r, fail_r)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    if fail:
        code_text, _, message = fail.decode(errors="replace").partition(" ")
        err += (message + "\n").encode()
        code = int(code_text) if code_text.isdigit() else 126
    return code, out, err


def _collect(buffers, out_r, err_r, fail_r):
    sel = selectors.DefaultSelector()
    for fd in buffers:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = set(buffers)
    while open_fds:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if chunk:
                buffers[key.fd].append(chunk)
            else:
                sel.unregister(key.fd)
                os.close(key.fd)
                open_fds.discard(key.fd)
    sel.close()
    return tuple(b"".join(buffers[fd]) for fd in (out_r, err_r, fail_r))


def _join_and_run(fds, argv, env, workdir, user, cgroup, out_w, err_w, fail_w, proot):
    if cgroup is not None:
        cgroup.add_process(os.getpid())
    for ns, fd in fds.items():
        _libc.setns(fd, 0)
    child = os.fork()
    if child == 0:
        spawn._child(lambda: _run(argv, env, workdir, user, out_w, err_w, fail_w, proot), fail_w)
    os.close(fail_w)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def _run(argv, env, workdir, user, out_w, err_w, fail_w, proot):
    if proot:  # a no-namespace container: run under proot in its root, as PID 1 was
        spawn._redirect(out_w, err_w, "/dev/null")
        spawn._exec([proot["proot"], "-r", proot["rootfs"], "-w", workdir or "/", "-b", "/dev",
                     "-b", "/proc", "-b", "/sys", "-0", *argv], env, fail_w)
    uid, gid, extra = security.resolve_user(user, "/")
    os.chdir(workdir or "/")
    security.harden_and_become(uid, gid, extra)
    spawn._redirect(out_w, err_w, "/dev/null")
    spawn._exec(argv, env, fail_w)
