"""What every cgroup implementation provides, and the steps they share.

A `CgroupManager` makes and finds groups; a `Cgroup` is one container's group. Groups live in
a directory called `ctrkernel` (`<hierarchy>/ctrkernel/<container id>`), so that leak checks
and `prune` find them by name.
"""
import contextlib
import errno
import os
import signal
import time

from ctrkernel.errors import CtrkernelError

GROUP_PARENT = "ctrkernel"


class CgroupError(CtrkernelError):
    """The kernel refused a cgroup operation (a write, a mkdir, an rmdir)."""


class Cgroup:
    """One container's cgroup. Subclasses implement the file writes and reads."""

    driver = "none"
    enforces = False
    why_not = ""

    def __init__(self, container_id, resources):
        self.id = container_id
        self.resources = resources
        self.notes = []           # what the kernel could not do, in words (e.g. "no memsw")

    # The interface -------------------------------------------------------------------------
    def add_process(self, pid):
        raise NotImplementedError

    def enter(self):
        """Call in the container's child process before exec: join this group (or, for the null
        implementation, apply setrlimit). Joining from the child leaves no window in which the
        command runs unlimited."""
        self.add_process(os.getpid())

    def update(self, resources):
        """Change the limits of a running group (`docker update`): fields set replace ours."""
        raise NotImplementedError

    def freeze(self):
        raise NotImplementedError

    def thaw(self):
        raise NotImplementedError

    def frozen(self) -> bool:
        raise NotImplementedError

    def pids(self) -> list:
        raise NotImplementedError

    def stats(self):
        raise NotImplementedError

    def oom_killed(self) -> bool:
        """True if the kernel's OOM killer killed a process of this group."""
        raise NotImplementedError

    def destroy(self):
        """Kill what is left in the group, then remove it. Safe to call twice."""
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.id} {self.resources.describe()}>"


class CgroupManager:
    driver = "none"
    enforces = False
    why_not = ""

    def create(self, container_id, resources) -> Cgroup:
        raise NotImplementedError

    def open(self, container_id) -> Cgroup:
        """The group of a container created by this or another process (NotFound if none)."""
        raise NotImplementedError

    def list_ids(self) -> list:
        """Container ids that have a group of ours on this host."""
        raise NotImplementedError

    def list_stale(self, known_ids) -> list:
        """Ids of groups whose container is unknown (left by a crash): what prune removes."""
        known = set(known_ids)
        return [i for i in self.list_ids() if i not in known]

    def remove_stale(self, known_ids) -> list:
        removed = []
        for container_id in self.list_stale(known_ids):
            self.open(container_id).destroy()
            removed.append(container_id)
        return removed

    def rlimits(self, resources) -> list:
        """[(resource, (soft, hard))] to set in the child; only the null driver needs them."""
        return []

    def __repr__(self):
        state = "enforces limits" if self.enforces else f"does not enforce limits: {self.why_not}"
        return f"<{type(self).__name__} driver={self.driver} {state}>"


def check_id(container_id):
    text = str(container_id)
    if not text or "/" in text or text in (".", "..") or "\0" in text:
        raise CgroupError(f"invalid container id for a cgroup name: {container_id!r}")
    return text


def write(path, text):
    """Write one value to a cgroup file, turning the kernel's errno into a clear error."""
    try:
        with open(path, "w") as f:
            f.write(str(text))
    except OSError as e:
        raise CgroupError(f"cannot write {text!r} to {path}: {os.strerror(e.errno)}") from None


def read(path):
    with open(path) as f:
        return f.read()


def make_group(parent, name):
    """mkdir parent/name, creating the shared parent; retries if a concurrent destroy removed
    the (then empty) parent between our two mkdirs."""
    for _ in range(5):
        os.makedirs(parent, exist_ok=True)
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            return path
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {path}: {os.strerror(e.errno)}") from None
    raise CgroupError(f"cannot create cgroup {parent}/{name}: its parent keeps disappearing")


def kill_all(read_pids, timeout=5.0):
    """SIGKILL every pid until the group is empty (new forks may appear while we kill)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = read_pids()
        if not pids:
            return True
        _kill_members(pids, read_pids)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _kill_members(pids, read_pids):
    """SIGKILL the processes `pids` named that are still in the group. A pid read from the
    group may exit and be reused by a process elsewhere before the signal: each is pinned with
    a pidfd first, and signalled only if the group still lists it after that."""
    pinned = {}
    try:
        for pid in pids:
            try:
                pinned[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            except OSError:              # no pidfds (kernel < 5.3, a seccomp filter): as before
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        still = set(read_pids()) if pinned else set()
        for pid, fd in pinned.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        for fd in pinned.values():
            os.close(fd)


def remove_dir(path, timeout=5.0):
    """rmdir a cgroup, retrying while the kernel still counts exiting processes (EBUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {path}: {os.strerror(e.errno)}") from None
            time.sleep(0.05)


def exited(pid):
    """True when pid is gone or a zombie (the kernel refuses to move either into a group)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def remove_parent_if_empty(parent):
    """Remove the shared `ctrkernel` directory once no group is left in it."""
    try:
        os.rmdir(parent)
    except OSError:
        pass                     # other containers' groups remain, or it is already gone
