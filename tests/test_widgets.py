"""The dashboard without a browser: the figure it builds, the live FigureWidget fed from the
sampling thread, the static figure left where no widget front end exists, event markers.
(tests/test_browser_dashboard.py checks the same dashboard in JupyterLab + Chromium.)"""
import subprocess
import time

import plotly.graph_objects as go
import pytest

from conftest import requires_isolation
from ctrkernel.widgets import Dashboard, widget_frontend


@pytest.fixture
def busy_process():
    p = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    yield p
    p.kill()
    p.wait()


def test_record_gives_a_static_figure_of_memory_cpu_and_processes(busy_process):
    dash = Dashboard(busy_process, "session", interval=0.2)
    fig = dash.record(1.2)
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:3] == ["memory (MiB)", "CPU (% of one CPU)", "processes"]
    assert len(fig.data) == 12                      # 2 targets x 3 rows x (value, limit)
    cpu = fig.data[2]
    assert cpu.name == f"pid {busy_process.pid}" and len(cpu.x) >= 4
    assert max(y for y in cpu.y if y is not None) > 20
    # No cgroup of ours: the (absent) limit line is named as not enforced.
    assert "not enforced" in fig.data[1].name
    assert not dash.recorder.running


def test_the_live_widget_is_fed_from_the_sampling_thread(busy_process):
    dash = Dashboard(busy_process, interval=0.1, min_push_interval=0)
    box = dash.widget()
    assert isinstance(dash.fig, go.FigureWidget) and dash.fig in box.children
    dash.start()
    try:
        time.sleep(1.0)                            # the main thread does nothing meanwhile
        n = len(dash.fig.data[0].x)
        time.sleep(0.6)
        assert len(dash.fig.data[0].x) > n >= 3
        assert dash.pushes >= 5 and not dash.recorder.errors
    finally:
        dash.stop()
    assert "stopped" in dash._status.value


def test_outside_a_widget_front_end_nothing_live_is_displayed(monkeypatch):
    assert widget_frontend() is False              # pytest: no kernel at all
    monkeypatch.setenv("CTRKERNEL_WIDGETS", "live")
    assert widget_frontend() is True


@requires_isolation("full")
def test_a_limit_change_is_marked_on_the_chart():
    from ctrkernel.lessons import cgroups as lesson
    from ctrkernel.runtime.cgroups import Resources
    c = lesson.start(lesson.cpu_burner(), "ctrkernel-test-widget-burner", cpus=1.0)
    try:
        dash = Dashboard(c, interval=0.2)
        dash.start()
        time.sleep(0.8)
        c.cgroup.update(Resources(nano_cpus=500_000_000))
        time.sleep(0.8)
        dash.mark("a note by hand")
        fig = dash.record(0.3)
    finally:
        c.remove(force=True)
    kinds = [e.kind for e in dash.events]
    assert kinds.count("limit") == 1 and "note" in kinds
    limit_event = next(e for e in dash.events if e.kind == "limit")
    assert "cpu 1.00 CPU -> cpu 0.50 CPU" in limit_event.text
    assert len(fig.layout.shapes) == 2             # one dotted line per event
    quota = [y for y in fig.data[3].y if y is not None]
    assert quota[0] == 100 and quota[-1] == 50
