"""Metrics: what a container (or a process tree, or this session's cgroup) uses, sampled.

No IPython here: the widgets build on this, and so do the command line and benchmarks.

    from ctrkernel import metrics
    metrics.stats(container)                  # one dict shaped like Docker's stats API
    metrics.cpu_percent(d), metrics.row(d)    # the docker CLI's arithmetic and columns
    rec = metrics.Recorder([c1, c2], interval=0.25).record(10)
    rec.series[c1.name]                       # [Point(t, memory_used, cpu_percent, pids, ...)]
    metrics.SessionCgroupSource()             # the cgroup this notebook runs in (read-only)
"""
from ctrkernel.metrics.docker import (cpu_percent, memory_percent, memory_usage, row, stats,
                                      table, to_docker)
from ctrkernel.metrics.recorder import Event, Recorder
from ctrkernel.metrics.sample import UNITS, Point, Sample, system_cpu_ns
from ctrkernel.metrics.sources import (CgroupSource, ContainerSource, ProcessTreeSource,
                                       SessionCgroupSource, Source, source_for)

__all__ = ["stats", "to_docker", "cpu_percent", "memory_usage", "memory_percent", "row", "table",
           "Recorder", "Event", "Sample", "Point", "UNITS", "system_cpu_ns", "Source",
           "ContainerSource", "CgroupSource", "ProcessTreeSource", "SessionCgroupSource",
           "source_for"]
