"""Run a command in a private mount namespace where PATH is reachable by any user.

CI may clone the repository below a directory only root can enter (such as /root). The
Binder-like and rootless tests run as uid 1000 and must reach the repository's virtual
environment and notebooks at the same absolute paths. So, in a mount namespace of its own (the
host's mount table is untouched), this covers the first ancestor that others cannot enter with an
empty tmpfs, recreates the path below it, and bind-mounts the real directory there.

Usage (as root): reach_as_user.py PATH -- COMMAND [ARG...]
"""
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ctrkernel import _libc  # noqa: E402


def blocking_ancestor(path):
    """The highest directory on the way to path that 'other' users cannot traverse."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i])
        if not os.stat(prefix).st_mode & stat.S_IXOTH:
            return prefix
    return None


def main(argv):
    target, command = argv[0], argv[argv.index("--") + 1:]
    blocker = blocking_ancestor(target)
    if blocker:
        _libc.unshare(_libc.CLONE_NEWNS)
        _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
        # Opened in our new namespace (a bind source must be in it), before it is covered.
        fd = os.open(target, os.O_PATH)
        _libc.mount("tmpfs", blocker, "tmpfs", 0, "mode=755")
        inside = os.path.join(blocker, os.path.relpath(target, blocker))
        os.makedirs(inside, mode=0o755, exist_ok=True)
        _libc.mount(f"/proc/self/fd/{fd}", inside, None, _libc.MS_BIND | _libc.MS_REC)
        os.close(fd)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
