"""Process, container and virtual machine measured side by side.

Each measurement is a function returning plain data (JSON-ready dicts), and a `figure_*`
function turning that data into a plotly figure, so the notebooks can plot either a fresh
measurement or a recorded one (data/vm/) with the same code.

Workloads use the host's busybox, so the very same binary runs as a plain process, in a
container (the busybox image is built from it) and in the VM (its initramfs holds it).
"""
import os
import platform
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from ctrkernel.errors import CtrkernelError
from ctrkernel.vm import initramfs, qemu
from ctrkernel.vm.boot import VM, boot

# Elapsed time measured inside each environment with its own clock (/proc/uptime, 10 ms).
WORKLOADS = {
    "cpu": "awk 'BEGIN { s = 0; for (i = 0; i < 400000; i++) s += i % 7; print s }'",
    "syscalls": "dd if=/dev/zero of=/dev/null bs=1 count=400000 2>/dev/null",
}
TIMED = ('s=$(cut -d" " -f1 /proc/uptime); {cmd} >/dev/null; '
         'e=$(cut -d" " -f1 /proc/uptime); echo "ELAPSED {name} $s $e"')
ELAPSED = re.compile(r"ELAPSED (\S+) ([\d.]+) ([\d.]+)")


def machine():
    """The machine a measurement ran on, stored with every recorded result."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    try:
        qemu_v = qemu.qemu_version()
    except CtrkernelError:
        qemu_v = None
    return {"cpu": cpu, "cores": os.cpu_count(), "host_kernel": platform.release(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "qemu": qemu_v, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "produced_by": "ctrkernel.vm.measure"}


def _busybox():
    return initramfs.find_busybox()


def workload_script():
    return "\n".join(TIMED.format(cmd=cmd, name=name) for name, cmd in WORKLOADS.items())


def parse_elapsed(text):
    return {m.group(1): round(float(m.group(3)) - float(m.group(2)), 3)
            for m in ELAPSED.finditer(text)}


# ---- the container side (the runtime helper's code) ---------------------------------------

def container_available():
    """(True, "") or (False, why): can this host run a busybox container right now?"""
    try:
        from ctrkernel.image import get_image  # noqa: F401
        from ctrkernel.runtime import run  # noqa: F401
    except ImportError as e:
        return False, f"the container runtime is not available here ({e})"
    return True, ""


def _run_container(script, **options):
    from ctrkernel.runtime import run
    out = run("busybox", ["sh", "-c", script], remove=True, stdout=True, stderr=True, **options)
    return out.decode() if isinstance(out, bytes) else str(out)


def container_tree_memory(container):
    """PSS and RSS (bytes) of a container's processes, the runtime's shim included."""
    procs = []
    try:
        top = psutil.Process(container.pid)
        procs = [top] + top.children(recursive=True)
        parent = top.parent()
        if parent and parent.pid not in (1, os.getpid()) and "shim" in " ".join(parent.cmdline()):
            procs.append(parent)
    except psutil.Error:
        pass
    return _memory(procs)


def _memory(procs):
    pss = rss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            pss, rss = pss + info.pss, rss + info.rss
        except psutil.Error:
            pass
    return {"pss": pss, "rss": rss}


# ---- start time -------------------------------------------------------------------------

def start_times(repeat=3, machines=None, timeout=120):
    """Seconds from "start it" to "it runs our code": a process, a container, a VM per machine
    type (to the userspace marker). Returns {"rows": [{kind, seconds, ...}], "machine": ...}."""
    rows = []
    busybox = str(_busybox())
    for _ in range(repeat):
        t = time.monotonic()
        subprocess.run([busybox, "echo", "ready"], capture_output=True, check=True)
        rows.append({"kind": "process", "seconds": time.monotonic() - t})
    ok, why = container_available()
    try:
        for _ in range(repeat if ok else 0):
            t = time.monotonic()
            _run_container("echo ready")
            rows.append({"kind": "container", "seconds": time.monotonic() - t})
    except CtrkernelError as e:
        why = f"the container could not run here: {e}"
    vm_info = {}
    for machine_type in machines or [m for m in ("microvm", "pc") if m in qemu.machine_types()]:
        for _ in range(repeat):
            record = boot(None, machine=machine_type, timeout=timeout)
            rows.append({"kind": f"VM ({machine_type})", "seconds": record.seconds_to_ready,
                         "accelerator": record.accelerator})
            vm_info = {"accelerator": record.accelerator, "kernel": record.kernel}
    return {"rows": [dict(r, seconds=round(r["seconds"], 4)) for r in rows],
            "container_note": why, **vm_info, "machine": machine()}


# ---- a full distribution ------------------------------------------------------------------

# systemd's console lines meaning "a user could log in now" (whichever comes first).
BOOTED_TARGETS = ("Reached target getty.target", "Login Prompts", "Multi-User System")


def full_distribution_boot(timeout=600):
    """Boot this host's own root filesystem (Debian with systemd) as a VM's disk, read-only
    under a tmpfs overlay, until systemd reports the login prompts up (getty.target) or
    multi-user.target: the deck's "VM boot", with an init system and services, measured. Needs root
    (virtiofsd). Several minutes under emulation: the notebooks show a recorded run."""
    vm = VM(None, share_host_root=True, memory_mb=512, env={"CTRKERNEL_SWITCH_ROOT": "1"},
            append=("systemd.show_status=1", "systemd.log_target=console",
                    "systemd.unit=multi-user.target"))
    with vm:
        ready = vm.wait_ready(timeout)
        finished = vm._wait_for(
            lambda: next(((t, line) for t, line in vm.lines if any(
                target in line for target in BOOTED_TARGETS)), None), timeout,
            "systemd's login prompts or multi-user.target")
        started = sum(" Started " in line for _, line in vm.lines)
        return {"seconds_to_initramfs": round(ready, 2),
                "seconds_to_login": round(finished[0], 2),
                "systemd_line": re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", finished[1]).strip(),
                "units_started": started, "accelerator": vm.accel, "memory_mb": vm.memory_mb,
                "distribution": _os_release(), "machine": machine()}


def _os_release():
    try:
        with open("/etc/os-release") as f:
            return re.search(r'PRETTY_NAME="?([^"\n]*)', f.read()).group(1)
    except (OSError, AttributeError):
        return "unknown"


# ---- memory -----------------------------------------------------------------------------

def idle_memory(settle=3.0, memory_mb=128, timeout=120):
    """Host memory (PSS and RSS of its processes) of an idle VM and an idle container."""
    rows = []
    with VM("sleep 100000", memory_mb=memory_mb) as vm:
        vm.wait_ready(timeout)
        time.sleep(settle)
        rows.append({"kind": "VM", **_memory([psutil.Process(vm.pid)]),
                     "configured_mb": memory_mb, "accelerator": vm.accel})
    ok, why = container_available()
    if ok:
        from ctrkernel.runtime import run
        try:
            c = run("busybox", ["sleep", "100000"], detach=True)
            try:
                time.sleep(min(settle, 1.0))
                rows.append({"kind": "container", **container_tree_memory(c)})
            finally:
                c.remove(force=True)
        except CtrkernelError as e:
            why = f"the container could not run here: {e}"
    return {"rows": rows, "container_note": why, "machine": machine()}


# ---- sizes ------------------------------------------------------------------------------

def _tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def sizes(kernel=None):
    """Bytes a minimal VM boots from (kernel + initramfs, no disk) vs the container image."""
    kernel = qemu.find_kernel(kernel)
    rows = [{"what": "VM", "part": "kernel (vmlinuz)", "bytes": kernel.stat().st_size},
            {"what": "VM", "part": "initramfs (busybox + modules)",
             "bytes": initramfs.build_base(kernel).stat().st_size}]
    ok, why = container_available()
    if ok:
        from ctrkernel.image import get_image
        try:
            for i, layer in enumerate(get_image("busybox").layer_dirs()):
                rows.append({"what": "container", "part": f"busybox image layer {i}",
                             "bytes": _tree_bytes(layer)})
        except CtrkernelError as e:
            why = f"the busybox image is not available here: {e}"
    return {"rows": rows, "container_note": why, "machine": machine()}


# ---- workloads --------------------------------------------------------------------------

def workloads(timeout=300):
    """Elapsed seconds of each workload as a process, in a container and in the VM, and the
    ratio to the plain process."""
    script = workload_script()
    busybox = str(_busybox())
    env = dict(os.environ, PATH=f"{Path(busybox).parent}:{os.environ.get('PATH', '')}")
    results = {"process": parse_elapsed(subprocess.run(
        [busybox, "sh", "-c", script], capture_output=True, text=True, env=env).stdout)}
    ok, why = container_available()
    if ok:
        try:
            results["container"] = parse_elapsed(_run_container(script))
        except CtrkernelError as e:
            why = f"the container could not run here: {e}"
    record = boot(script, timeout=timeout)
    results[f"VM ({record.accelerator})"] = parse_elapsed(record.output)
    rows = []
    for kind, times in results.items():
        for name, seconds in times.items():
            base = results["process"].get(name) or float("nan")
            rows.append({"kind": kind, "workload": name, "seconds": seconds,
                         "ratio": round(seconds / base, 2) if base else None})
    return {"rows": rows, "workloads": WORKLOADS, "container_note": why, "machine": machine()}


# ---- figures (plotly graph objects: plotly.express would need numpy and pandas) ----------

def _go():
    try:
        import plotly.graph_objects as go
    except ImportError:
        from ctrkernel.errors import OptionalDependencyMissing
        raise OptionalDependencyMissing("plotly", "course", "plotting measurements") from None
    return go


COLORS = {"process": "#264653", "container": "#2a9d8f", "VM": "#e76f51"}


def _color(kind):
    return next((c for k, c in COLORS.items() if kind.startswith(k)), "#8d99ae")


def _grouped(rows, key):
    groups = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return groups


def figure_start_times(data, full=None):
    go = _go()
    rows = list(data["rows"])
    if full:
        rows.append({"kind": "VM (full Debian, systemd; recorded)",
                     "seconds": full["seconds_to_login"]})
    fig = go.Figure()
    for kind, group in _grouped(rows, "kind").items():
        fig.add_scatter(x=[kind] * len(group), y=[r["seconds"] for r in group], mode="markers",
                        name=kind, marker=dict(size=12, color=_color(kind)))
    fig.update_layout(title="From 'start' to 'our code runs' (log scale)", showlegend=False,
                      yaxis=dict(type="log", title="seconds (log scale)"))
    return fig


def figure_memory(data):
    go = _go()
    kinds = [r["kind"] for r in data["rows"]]
    fig = go.Figure()
    for measure, color in (("pss", "#457b9d"), ("rss", "#a8dadc")):
        fig.add_bar(x=kinds, y=[r[measure] / 2**20 for r in data["rows"]], name=measure.upper(),
                    marker_color=color)
    fig.update_layout(title="Host memory of one idle instance", barmode="group",
                      yaxis_title="MiB")
    return fig


def figure_sizes(data):
    go = _go()
    fig = go.Figure()
    for r in data["rows"]:
        fig.add_bar(x=[r["what"]], y=[r["bytes"] / 2**20], name=r["part"])
    fig.update_layout(title="What each one is made of", barmode="stack", yaxis_title="MiB")
    return fig


def figure_workloads(data):
    go = _go()
    fig = go.Figure()
    for kind, group in _grouped(data["rows"], "kind").items():
        fig.add_bar(x=[r["workload"] for r in group], y=[r["ratio"] for r in group], name=kind,
                    marker_color=_color(kind))
    fig.add_hline(y=1, line_dash="dot")
    fig.update_layout(title="Time relative to a plain process (1 = same speed)",
                      barmode="group", yaxis_title="ratio")
    return fig
