"""Notebook helpers for chapters 01 and 06: measure live where this machine can boot a VM,
otherwise load what the same code recorded on a described machine (data/vm/), and say which.

Every function returns a dict with "source": "live ..." or "recorded on ...", and `banner(d)`
shows that visibly. Results are cached for the life of the kernel, so re-running a cell does not
boot again.
"""
import html
import json
import os
from pathlib import Path

from ctrkernel.errors import CtrkernelError

DATA = Path(__file__).resolve().parent.parent.parent / "data" / "vm"
_cache = {}


def can_boot():
    """(True, how) when QEMU and a readable kernel are here, else (False, why not)."""
    from ctrkernel.host import doctor
    report = doctor()
    for check in ("qemu", "vm_kernel"):
        if not report.ok(check):
            return False, f"{check}: {report.check(check).detail}"
    try:
        from ctrkernel.vm import qemu
        kernel = qemu.find_kernel()
        verdict = qemu.accelerator(kernel)
    except CtrkernelError as e:
        return False, str(e)
    return True, f"{kernel.name} under {verdict['accel'].upper()} ({verdict['why']})"


def describe(machine):
    return (f"{machine.get('cpu')} ({machine.get('cores')} cores), host kernel "
            f"{machine.get('host_kernel')}, QEMU {machine.get('qemu')}, {machine.get('date')}")


def recorded(name):
    with open(DATA / f"{name}.json") as f:
        data = json.load(f)
    data["source"] = f"recorded on {describe(data.get('machine', {}))} (data/vm/{name}.json)"
    return data


def _live_or_recorded(name, measure, live=None, always_recorded=""):
    if name in _cache:
        return _cache[name]
    if always_recorded:
        data = recorded(name)
        data["source"] += f"; {always_recorded}"
        _cache[name] = data
        return data
    forced = live is False or bool(os.environ.get("CTRKERNEL_VM_RECORDED"))
    ok, why = (False, "recorded results requested") if forced else can_boot()
    if ok:
        try:
            data = measure()
            data["source"] = f"live, on this machine: {why}"
        except CtrkernelError as e:
            data = recorded(name)
            data["source"] += f"; live measurement failed here: {e}"
    else:
        data = recorded(name)
        data["source"] += ("; live measurement not attempted (recorded results requested)"
                           if forced else f"; this machine cannot boot a VM ({why})")
    _cache[name] = data
    return data


def start_times(live=None):
    from ctrkernel.vm import measure
    return _live_or_recorded("start_times", lambda: measure.start_times(repeat=1), live)


def memory(live=None):
    from ctrkernel.vm import measure
    return _live_or_recorded("idle_memory", measure.idle_memory, live)


def sizes(live=None):
    from ctrkernel.vm import measure
    return _live_or_recorded("sizes", measure.sizes, live)


def workloads(live=None):
    from ctrkernel.vm import measure
    return _live_or_recorded("workloads", measure.workloads, live)


def full_boot():
    """A full distribution's boot (several minutes under emulation): always the recording."""
    return _live_or_recorded("full_boot", None, always_recorded=(
        "always shown from its recording: it takes minutes of CPU under emulation (run "
        "ctrkernel.vm.measure.full_distribution_boot() as root to measure it here)"))


def density(budget_mb=512, cap=4, live=None):
    from ctrkernel.vm import density as dens
    return _live_or_recorded("density", lambda: dens.run_density(budget_mb, cap), live)


def banner(data):
    """A visible note saying where the numbers come from."""
    from IPython.display import HTML
    live = data["source"].startswith("live")
    color = "#e8f5e9" if live else "#fff3e0"
    icon = "Measured live" if live else "RECORDED RESULTS, not measured on this machine"
    notes = [data.get("container_note")] if data.get("container_note") else []
    extra = "".join(f"<br><i>{html.escape(n)}</i>" for n in notes)
    return HTML(f"<div style='background:{color};padding:6px;border-radius:4px'><b>{icon}</b>: "
                f"{html.escape(data['source'])}{extra}</div>")


def table(rows, columns):
    """A small HTML table of rows (dicts) for the given columns."""
    from IPython.display import HTML
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns)
                   + "</tr>" for r in rows)
    return HTML(f"<table><tr>{head}</tr>{body}</table>")


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def summary(data, kind_key="kind", value="seconds"):
    """{kind: median value} over rows."""
    import statistics
    groups = {}
    for r in data["rows"]:
        groups.setdefault(r[kind_key], []).append(r[value])
    return {k: statistics.median(v) for k, v in groups.items()}


def record_all(budget_mb=512, cap=4):
    """Measure everything live and write data/vm/*.json (run on a machine that can boot VMs)."""
    from ctrkernel.vm import density as dens, measure
    DATA.mkdir(parents=True, exist_ok=True)
    jobs = {"views": lambda: views(live=True),
            "start_times": lambda: measure.start_times(repeat=3),
            "idle_memory": measure.idle_memory, "sizes": measure.sizes,
            "workloads": measure.workloads,
            "shared_pages": lambda: shared_pages(live=True),
            "density": lambda: dens.run_density(budget_mb, cap)}
    for name, job in jobs.items():
        data = job()
        (DATA / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    return sorted(p.name for p in DATA.glob("*.json"))


GUEST_VIEW = ("echo kernel=$(uname -r); echo cpus=$(nproc); "
              "echo memory_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo); "
              "echo processes=$(ls -d /proc/[0-9]* | wc -l)")


def _parse_view(text):
    return dict(line.split("=", 1) for line in text.split() if "=" in line)


def views(live=None):
    """What a process sees from inside each: the kernel release, CPUs, memory, processes."""
    def measure():
        import subprocess
        from ctrkernel.vm import boot, measure as m
        busybox = str(m._busybox())
        out = {"process": _parse_view(subprocess.run([busybox, "sh", "-c", GUEST_VIEW],
                                                     capture_output=True, text=True).stdout)}
        ok, why = m.container_available()
        if ok:
            try:
                out["container"] = _parse_view(m._run_container(GUEST_VIEW))
            except CtrkernelError as e:
                why = str(e)
        record = boot(GUEST_VIEW, timeout=180)
        out[f"VM ({record.accelerator})"] = _parse_view(record.output)
        return {"rows": [dict(kind=k, **v) for k, v in out.items()], "container_note": why,
                "machine": m.machine()}
    return _live_or_recorded("views", measure, live)


def measure_figures():
    """The module with the figure_* functions (ctrkernel.vm.measure)."""
    from ctrkernel.vm import measure
    return measure


def shared_pages(live=None):
    """Two idle containers: their PSS together against their RSS summed (shared busybox pages)."""
    def measure():
        import time
        from ctrkernel.vm import measure as m
        ok, why = m.container_available()
        rows = []
        if ok:
            from ctrkernel.runtime import run
            containers = []
            try:
                for _ in range(2):
                    containers.append(run("busybox", ["sleep", "100000"], detach=True))
                time.sleep(1)
                for i, c in enumerate(containers, 1):
                    rows.append({"container": i, **m.container_tree_memory(c)})
            except CtrkernelError as e:
                why = f"the containers could not run here: {e}"
            finally:
                for c in containers:
                    c.remove(force=True)
        return {"rows": rows, "container_note": why, "machine": m.machine()}
    return _live_or_recorded("shared_pages", measure, live)
