"""The density experiment: how many identical web servers fit in one memory budget?

The deck reports 16 Tomcat instances in VMs against 40 in containers on one host. Here, in
miniature: busybox httpd serving one page, started again and again, as containers (a published
port on 127.0.0.1) and as VMs (QEMU user-mode networking forwarding a 127.0.0.1 port), until the
host memory they cost together (PSS, so shared pages are split fairly) passes the budget or a
cap is reached. Every instance must answer an HTTP request before it counts.

Why containers fit more: a container has no guest kernel, no virtual hardware and no second
page cache; its processes share the host's kernel and the image's files (the same busybox pages
for every instance), while each VM carries its own kernel, its own copy of everything it loaded,
and the emulator around it.
"""
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FuturesTimeout

import psutil
import requests

from ctrkernel.errors import CtrkernelError, VMError
from ctrkernel.vm import measure
from ctrkernel.vm.boot import VM, free_port

SERVER = ('mkdir -p /tmp/www && echo "hello from {kind} {index}" > /tmp/www/index.html && '
          'exec httpd -f -p 80 -h /tmp/www')


def _answers(port, timeout):
    """Seconds until http://127.0.0.1:port/ answers 200, or None within `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            reply = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
            if reply.status_code == 200 and "hello from" in reply.text:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return None


class _ContainerServer:
    kind = "container"

    def __init__(self, index, timeout):
        from ctrkernel.runtime import run
        self.port = free_port()
        # A bounded start: the experiment reports a runtime that does not return, never hangs.
        pool = ThreadPoolExecutor(1)
        future = pool.submit(run, "busybox", ["sh", "-c", SERVER.format(kind="container",
                                                                      index=index)],
                             detach=True, ports={"80/tcp": self.port})
        pool.shutdown(wait=False)
        try:
            self.container = future.result(timeout=timeout)
        except FuturesTimeout:
            raise CtrkernelError(f"starting container {index} did not return within "
                                 f"{timeout:.0f} s") from None

    def memory(self):
        return measure.container_tree_memory(self.container)

    def stop(self):
        self.container.remove(force=True)


class _VMServer:
    kind = "VM"

    def __init__(self, index, memory_mb, timeout):
        self.port = free_port()
        self.vm = VM(SERVER.format(kind="VM", index=index), memory_mb=memory_mb,
                     forwards={80: self.port})
        self.vm.start()
        self.vm.wait_ready(timeout)

    def memory(self):
        return measure._memory([psutil.Process(self.vm.pid)])

    def stop(self):
        self.vm.stop()


def fill(kind, budget_mb=512, cap=8, vm_memory_mb=96, timeout=120, progress=None):
    """Start servers of one kind until the budget or the cap; returns a dict of results.

    The instance that pushes the total past the budget is stopped and reported as not fitting.
    """
    budget = budget_mb * 2**20
    servers, rows, stopped_by = [], [], "cap"
    try:
        while len(servers) < cap:
            index = len(servers) + 1
            t = time.monotonic()
            server = (_ContainerServer(index, timeout) if kind == "container"
                      else _VMServer(index, vm_memory_mb, timeout))
            servers.append(server)
            waited = _answers(server.port, timeout)
            if waited is None:
                raise VMError(f"{kind} {index} did not answer on 127.0.0.1:{server.port}")
            memory = server.memory()
            total = sum(r["pss"] for r in rows) + memory["pss"]
            row = {"kind": kind, "index": index, "port": server.port, **memory,
                   "seconds_to_answer": round(time.monotonic() - t, 2), "fits": total <= budget}
            rows.append(row)
            if progress:
                progress(row)
            if total > budget:
                servers.pop().stop()
                stopped_by = "budget"
                break
        # Everyone that fits must still answer with all the others running.
        answering = sum(_answers(s.port, 10) is not None for s in servers)
    finally:
        for server in servers:
            server.stop()
    fitted = [r for r in rows if r["fits"]]
    mean = sum(r["pss"] for r in fitted) / len(fitted) if fitted else None
    return {"kind": kind, "fitted": len(fitted), "answering": answering, "stopped_by": stopped_by,
            "budget_mb": budget_mb, "cap": cap, "mean_pss": mean,
            "would_fit": int(budget // mean) if mean else 0, "rows": rows,
            "vm_memory_mb": vm_memory_mb if kind == "VM" else None}


def run_density(budget_mb=512, cap=8, vm_memory_mb=96, timeout=120, progress=None):
    """The experiment for containers and VMs under the same budget; {"container": ..., "VM":
    ..., "machine": ...}. A side that cannot run here is reported with the reason."""
    result = {"machine": measure.machine(), "budget_mb": budget_mb, "cap": cap}
    ok, why = measure.container_available()
    for kind in ("container", "VM"):
        if kind == "container" and not ok:
            result[kind] = {"kind": kind, "error": why}
            continue
        try:
            result[kind] = fill(kind, budget_mb, cap, vm_memory_mb, timeout, progress)
        except CtrkernelError as e:
            result[kind] = {"kind": kind, "error": str(e)}
    return result


def figure_density(result):
    """Bars: how many fitted, and the memory each cost (hover), for both kinds."""
    from plotly.subplots import make_subplots
    kinds = [k for k in ("container", "VM") if "fitted" in result.get(k, {})]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"Instances that fit in {result['budget_mb']} MiB (cap {result['cap']})",
        "Host memory per instance (PSS, MiB)"))
    fig.add_bar(x=kinds, y=[result[k]["fitted"] for k in kinds], name="fitted", row=1, col=1,
                marker_color=["#2a9d8f", "#e76f51"][:len(kinds)])
    fig.add_bar(x=kinds, y=[result[k]["would_fit"] for k in kinds], name="budget / mean cost",
                row=1, col=1, marker_color="lightgray")
    for k in kinds:
        fig.add_box(y=[r["pss"] / 2**20 for r in result[k]["rows"]], name=k, row=1, col=2,
                    boxpoints="all")
    fig.update_layout(title="Density in miniature: identical busybox web servers",
                      showlegend=False, barmode="group")
    return fig
