"""Live views over ctrkernel.metrics: plotly FigureWidget + ipywidgets (the `course` extra).

    from ctrkernel.widgets import Dashboard
    dash = Dashboard(container_a, container_b)   # displayed: live, sampling in the background
    dash.record(10)                              # or: sample 10 s and get a static figure
"""
from ctrkernel.widgets.dashboard import Dashboard, dashboard, widget_frontend
from ctrkernel.widgets.figures import build_figure

__all__ = ["Dashboard", "dashboard", "build_figure", "widget_frontend"]
