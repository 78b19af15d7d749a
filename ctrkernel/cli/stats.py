"""`ctrkernel stats`: live resource use of containers, as `docker stats` shows it.

The numbers come from ctrkernel.metrics (the container's cgroup, or its processes in /proc where
no cgroup of ours exists) shaped as Docker's stats API, then formatted with the docker CLI's
arithmetic: CPU % from two samples, memory without inactive page cache, sizes in Docker's units.
"""
import sys
import time

from ctrkernel.cli.registry import arg, verb


def _containers(args):
    from ctrkernel.runtime import get, list_containers
    if args.containers:
        return [get(ref) for ref in args.containers]
    return list_containers(all=args.all)


def _render(rows, fmt):
    """The text for --format: our table by default, else the shared template renderer (the
    same subset of Go templates as `images` and `history`)."""
    from ctrkernel.cli.formatting import render
    from ctrkernel.metrics import table
    from ctrkernel.metrics.docker import COLUMNS
    lines = render(rows, fmt, headers=dict(COLUMNS))
    return table(rows) if lines is None else "\n".join(lines)


def _empty_row(c):
    """What docker prints for a container that is not running."""
    return {"Container": c.name, "ID": c.short_id, "Name": c.name, "CPUPerc": "0.00%",
            "MemUsage": "0B / 0B", "MemPerc": "0.00%", "NetIO": "0B / 0B",
            "BlockIO": "0B / 0B", "PIDs": "0"}


class _Watcher:
    """Keeps one ContainerSource and its last sample per container."""

    def __init__(self):
        self.sources, self.previous = {}, {}

    def rows(self, containers):
        from ctrkernel.metrics import ContainerSource, row, to_docker
        out = []
        for c in containers:
            if c.status not in ("running", "paused"):
                out.append(_empty_row(c))
                continue
            source = self.sources.get(c.id) or self.sources.setdefault(c.id, ContainerSource(c))
            sample = source.read()
            if sample is None:
                out.append(_empty_row(c))
                continue
            shaped = to_docker(sample, self.previous.get(c.id), c.name, c.id, c.pid,
                               network=c.attrs.get("Network") != "host")
            self.previous[c.id] = sample
            out.append(row(shaped))
        return out


@verb("stats")
@arg("-a", "--all", action="store_true", help="show all containers (default: running)")
@arg("--no-stream", action="store_true", help="print one table and exit")
@arg("--format", default="table",
     help="table (default), json, or a template like 'table {{.Name}}\\t{{.CPUPerc}}'")
@arg("--interval", type=float, default=1.0, help="seconds between samples (docker: 1)")
@arg("containers", nargs="*", help="container names or ids (default: all running)")
def stats(args):
    """Display a live stream of container(s) resource usage statistics."""
    containers = _containers(args)
    watcher = _Watcher()
    watcher.rows(containers)               # the first sample: CPU % needs a second one
    while True:
        time.sleep(args.interval)
        if not args.containers:            # containers started or removed meanwhile
            containers = _containers(args)
        else:
            for c in containers:
                try:
                    c.reload()
                except Exception:
                    pass
        text = _render(watcher.rows(containers), args.format)
        if args.no_stream:
            print(text)
            return 0
        sys.stdout.write("\033[2J\033[H" + text + "\n")   # redraw in place, as docker does
        sys.stdout.flush()
