"""A process tree read from /proc (with psutil): what stands in for a cgroup where we have none.

Used by the null cgroup driver (its "group" is the container's process tree) and by the
metrics samplers for processes that are not in a cgroup of ours.
"""
import psutil

from ctrkernel.runtime.cgroups.stats import CgroupStats


def processes(roots):
    """The live (not zombie) psutil.Processes among `roots` and all their descendants."""
    procs = {}
    for root in roots:
        try:
            if not isinstance(root, psutil.Process):
                root = psutil.Process(root)
            if root.status() == psutil.STATUS_ZOMBIE:
                continue
            procs[root.pid] = root
            for child in root.children(recursive=True):
                procs[child.pid] = child
        except psutil.Error:
            continue
    return list(procs.values())


def tree_stats(procs):
    """CgroupStats(source="proc") summed over `procs`.

    Memory is the sum of resident set sizes (a shared page counts once per process: an upper
    bound), CPU the user + system time of live processes plus what their reaped children used,
    pids the number of threads (what a pids cgroup counts)."""
    s = CgroupStats(source="proc", memory_usage=0, cpu_usage_ns=0, cpu_user_ns=0,
                    cpu_system_ns=0, pids_current=0, blkio_read_bytes=0, blkio_write_bytes=0)
    for p in procs:
        try:
            with p.oneshot():
                s.memory_usage += p.memory_info().rss
                t = p.cpu_times()
                s.cpu_user_ns += int((t.user + t.children_user) * 1e9)
                s.cpu_system_ns += int((t.system + t.children_system) * 1e9)
                s.pids_current += p.num_threads()
                try:
                    io = p.io_counters()
                    s.blkio_read_bytes += io.read_bytes
                    s.blkio_write_bytes += io.write_bytes
                except (psutil.AccessDenied, AttributeError):
                    pass
        except psutil.Error:
            continue
    s.cpu_usage_ns = s.cpu_user_ns + s.cpu_system_ns
    s.pids = sorted(p.pid for p in procs)
    return s
