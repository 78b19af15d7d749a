"""A live dashboard for one or several containers (or process trees, or this session's cgroup).

    dash = Dashboard(c1, c2, interval=0.5)
    dash                       # in JupyterLab: the live view; sampling starts in the background
    ...                        # run other cells: the chart keeps updating
    dash.stop(); dash.figure() # a static plotly figure of what was recorded

Sampling runs in a background thread (ctrkernel.metrics.Recorder); after each round the thread
pushes the new data to the plotly FigureWidget inside one `batch_update`, which ipykernel sends
to the browser over the widget's comm without waiting for the notebook's main thread. So the
view keeps moving while other cells run.

Where no widget front end exists (papermill, nbval, a terminal) nothing is lost: `record()`
samples for a while and returns a static `go.Figure` of what was recorded, which an executed
notebook stores and shows like any plot.
"""
import html
import os
import threading
import time

from ctrkernel.errors import OptionalDependencyMissing
from ctrkernel.metrics import Recorder
from ctrkernel.widgets.figures import (ROWS, build_figure, event_shapes, trace_arrays,
                                       trace_layout)


def widget_frontend():
    """True when this code runs in a kernel whose cell was sent by a front end that renders
    widgets (JupyterLab and Notebook 7 put a `cellId` in every execute request's metadata;
    papermill and nbval do not). CTRKERNEL_WIDGETS=live or =static overrides the guess."""
    forced = os.environ.get("CTRKERNEL_WIDGETS", "").lower()
    if forced in ("live", "static"):
        return forced == "live"
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False
    try:
        parent = kernel.get_parent()
    except Exception:
        parent = getattr(shell, "parent_header", None) or {}
    return "cellId" in ((parent or {}).get("metadata") or {})


def _require_widgets():
    try:
        import ipywidgets  # noqa: F401
        import plotly.graph_objects as go
        go.FigureWidget()
    except ImportError as e:
        raise OptionalDependencyMissing(
            f"the live dashboard needs ipywidgets, plotly and anywidget ({e}): "
            "pip install 'ctrkernel[course]'") from None


class Dashboard:
    def __init__(self, *targets, interval=0.5, title=None, min_push_interval=0.2, window=180):
        if len(targets) == 1 and isinstance(targets[0], (list, tuple)):
            targets = tuple(targets[0])
        self.recorder = Recorder(list(targets), interval=interval)
        self.title = title
        self.min_push_interval = min_push_interval   # s: coalesce pushes to the browser
        self.window = window          # s shown live (all of it stays in figure()); None = all
        self.fig = None
        self._box = None
        self._status = None
        self._last_push = 0.0
        self._shown_events = 0
        self._push_lock = threading.Lock()
        self.pushes = 0
        self.recorder.on_sample(self._on_sample)

    # ---- sampling ------------------------------------------------------------------------
    def start(self):
        self.recorder.start()
        self._update_status()
        return self

    def stop(self):
        self.recorder.stop()
        self._push(force=True)
        return self

    def record(self, seconds, until=None):
        """Sample for `seconds` (or until `until(recorder)`), stop, and return the static figure."""
        self.recorder.record(seconds, until=until)
        self._push(force=True)
        return self.figure()

    def mark(self, text, target="", kind="note"):
        """Put an event line on the chart (e.g. "limit lowered" after container.update())."""
        self.recorder.mark(text, target, kind)

    @property
    def events(self):
        return list(self.recorder.events)

    def summary(self):
        return self.recorder.summary()

    # ---- views ---------------------------------------------------------------------------
    def figure(self):
        """A static go.Figure of everything recorded (what papermill and nbval keep)."""
        return build_figure(self.recorder, widget=False, title=self.title)

    def widget(self):
        """The live view: a header naming each source, start/stop buttons, the FigureWidget."""
        if self._box is not None:
            return self._box
        _require_widgets()
        import ipywidgets as W
        self.fig = build_figure(self.recorder, widget=True, title=self.title)
        start = W.Button(description="Start sampling", icon="play", button_style="success")
        stop = W.Button(description="Stop sampling", icon="stop", button_style="warning")
        start.on_click(lambda _: self.start())
        stop.on_click(lambda _: self.stop())
        self._status = W.HTML()
        lines = "".join(f"<li><b>{html.escape(s.name)}</b>: {html.escape(s.label)}</li>"
                        for s in self.recorder.sources)
        header = W.HTML(f"<ul style='margin:0'>{lines}</ul>")
        self._box = W.VBox([header, W.HBox([start, stop, self._status]), self.fig])
        self._update_status()
        return self._box

    def show(self, start=True, live=None):
        """Display the live view where a widget front end is attached (and start sampling).

        live=None decides with `widget_frontend()`; without one (papermill, nbval, a terminal)
        nothing is displayed now: show `figure()` once something is recorded."""
        if start:
            self.start()
        if live is None:
            live = widget_frontend()
        if live:
            from IPython.display import display
            display(self.widget())
        return self

    def _ipython_display_(self):
        if widget_frontend():
            self.show()
        else:
            from IPython.display import display
            display(self.figure())

    def __repr__(self):
        names = ", ".join(s.name for s in self.recorder.sources)
        state = "sampling" if self.recorder.running else "stopped"
        return f"<Dashboard {names}: {state}, {self.recorder.rounds} rounds>"

    # ---- pushing to the browser -------------------------------------------------------------
    def _on_sample(self, recorder, new):
        self._push()

    def _update_status(self):
        if self._status is None:
            return
        state = "sampling" if self.recorder.running else "stopped"
        last = []
        for name in self.recorder.series:
            pts = self.recorder.points(name)
            if pts:
                last.append(f"{html.escape(name)}: {html.escape(pts[-1].status)}")
        self._status.value = (f"<span style='padding-left:1em'>{state} every "
                              f"{self.recorder.interval:g} s, {self.recorder.rounds} rounds"
                              f"{' &middot; ' if last else ''}{' &middot; '.join(last)}</span>")

    def _recent(self, points):
        """The live view sends only the last `window` seconds: each push carries whole
        arrays, and a long session must not make every update heavier."""
        if not self.window or not points:
            return points
        start = points[-1].t - self.window
        return [p for p in points if p.t >= start]

    def _push(self, force=False):
        """Send everything recorded to the FigureWidget in one batch_update (from any thread)."""
        if self.fig is None:
            return
        now = time.monotonic()
        if not force and now - self._last_push < self.min_push_interval:
            return
        with self._push_lock:
            self._last_push = now
            arrays = {name: trace_arrays(self._recent(self.recorder.points(name)))
                      for name in self.recorder.series}
            events = self.recorder.events
            with self.fig.batch_update():
                for trace, (name, field) in zip(self.fig.data, trace_layout(self.recorder)):
                    x, y = arrays[name][field]
                    trace.x, trace.y = x, y
                if len(events) != self._shown_events:
                    shapes, notes = event_shapes(events)
                    titles = [a for a in self.fig.layout.annotations
                              if a.text in {r[2] for r in ROWS}]
                    self.fig.layout.shapes = shapes
                    self.fig.layout.annotations = titles + notes
                    self._shown_events = len(events)
            self.pushes += 1
        self._update_status()


def dashboard(*targets, interval=0.5, title=None, show=True):
    """Make a Dashboard and (by default) show it live and start sampling."""
    dash = Dashboard(*targets, interval=interval, title=title)
    if show:
        dash.show()
    else:
        dash.start()
    return dash
