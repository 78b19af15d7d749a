"""The dashboard's figure, built from a Recorder: three rows sharing the time axis.

1. memory in use (MiB, as `docker stats` counts it) against the memory limit (dashed);
2. CPU (% of one CPU, as `docker stats`) against the CPU quota (dashed);
3. processes (pids, threads included) against the pids limit (dashed).

Events (OOM kill, exit, limit change) are vertical lines with a label. A limit that the kernel
does not enforce (no cgroup of ours) is drawn dotted and named "asked, not enforced".
The same function gives the static figure (go.Figure) and the live one's starting state.
"""
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

MIB = 2 ** 20
ROWS = (("memory_used", "memory_limit", "memory (MiB)", MIB),
        ("cpu_percent", "cpu_limit_percent", "CPU (% of one CPU)", 1),
        ("pids", "pids_limit", "processes", 1))
EVENT_COLORS = {"oom": "crimson", "exit": "gray", "limit": "darkorange", "note": "teal",
                "pause": "steelblue", "unpause": "seagreen"}


def trace_arrays(points):
    """{field: (x, y)} for each row's value and limit fields, scaled for display."""
    out = {}
    x = [round(p.t, 3) for p in points]
    for value, limit, _, scale in ROWS:
        for field in (value, limit):
            y = [None if getattr(p, field) is None else getattr(p, field) / scale
                 for p in points]
            out[field] = (x, y)
    return out


def trace_layout(recorder):
    """[(target, field)] in trace order: for each target, value then limit for each row."""
    return [(source.name, field) for source in recorder.sources
            for value, limit, _, _ in ROWS for field in (value, limit)]


def event_shapes(events):
    shapes, notes = [], []
    for e in events:
        color = EVENT_COLORS.get(e.kind, "teal")
        shapes.append(dict(type="line", xref="x", yref="paper", x0=e.t, x1=e.t, y0=0, y1=1,
                           line=dict(color=color, width=1.5, dash="dot")))
        notes.append(dict(x=e.t, xref="x", y=1.0, yref="paper", yanchor="bottom",
                          text=e.text[:60], showarrow=False, textangle=-20,
                          font=dict(size=10, color=color)))
    return shapes, notes


def build_figure(recorder, widget=False, title=None):
    """A go.Figure (or go.FigureWidget when widget=True) of everything recorded so far."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[r[2] for r in ROWS])
    palette = qualitative.Plotly
    for i, source in enumerate(recorder.sources):
        color = palette[i % len(palette)]
        arrays = trace_arrays(recorder.points(source.name))
        for row, (value, limit, _, _) in enumerate(ROWS, start=1):
            x, y = arrays[value]
            fig.add_trace(go.Scatter(x=x, y=y, name=source.name, legendgroup=source.name,
                                     showlegend=row == 1, mode="lines",
                                     # simplify=False: every sample stays a vertex
                                     line=dict(color=color, width=2, simplify=False)),
                          row=row, col=1)
            x, y = arrays[limit]
            limit_name = (f"{source.name} limit" if source.enforced
                          else f"{source.name} limit (asked, not enforced)")
            fig.add_trace(go.Scatter(x=x, y=y, name=limit_name, legendgroup=source.name,
                                     showlegend=row == 1, mode="lines",
                                     line=dict(color=color, width=1.5,
                                               dash="dash" if source.enforced else "dot")),
                          row=row, col=1)
    shapes, notes = event_shapes(recorder.events)
    fig.update_layout(height=620, margin=dict(l=60, r=20, t=70, b=40),
                      title=title or "container resources, sampled every "
                                     f"{recorder.interval:g} s",
                      legend=dict(orientation="h", y=-0.08), shapes=shapes,
                      annotations=list(fig.layout.annotations) + notes,
                      uirevision="keep")       # keep the learner's zoom across updates
    fig.update_xaxes(title_text="seconds since sampling started", row=3, col=1)
    fig.update_yaxes(rangemode="tozero")
    if widget:
        return go.FigureWidget(fig)
    return fig
