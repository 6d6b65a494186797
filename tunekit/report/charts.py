"""The report's interactive charts (plotly), for report.html: the study's error-against-cost chart and
the slice plots, with hover, a legend whose families click on and off, and the Pareto front.

    html = chart_html(error_vs_cost(ranked, "fit_time", "pets"), first=True)   # plotly.js inlined once

plotly is the one charting library here that gives hover, legend toggling and zoom in a file that
opens offline: ``include_plotlyjs=True`` inlines plotly.js (about 4.7 MB) into the first chart of a
page and the others reuse it, so report.html needs no network and no CDN. The PNGs (matplotlib,
``render``) stay for report.md and TensorBoard.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

COST_LABELS = {"fit_time": "fit time (s)", "fit_time_unshared": "fit time unshared (s)",
               "gpu_mem": "peak GPU memory (GiB)"}
CONFIG_KEYS = ("pool", "head", "resize", "lr", "zero_init", "img_size", "batch_size")


def _palette(n: int) -> list[str]:
    import plotly.express as px

    colours = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    return [colours[i % len(colours)] for i in range(n)]


def config_text(row: pd.Series) -> str:
    """A run's searched settings as ``pool=concat resize=squish lr=0.008``."""
    parts = []
    for key in CONFIG_KEYS:
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and pd.isna(value)):
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts) or "-"


def error_vs_cost(ranked: pd.DataFrame, cost: str, dataset: str, front: pd.Series) -> Any:
    """One point per model (the study's per-model minima), a trace per family, the Pareto front drawn.
    ``ranked`` has the ranking's columns plus ``config`` (the most accurate run's settings)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    families = sorted(ranked["family"].unique())
    hover = ("<b>%{customdata[0]}</b><br>%{customdata[1]}<br>error_rate %{y:.4f}<br>fit_time %{customdata[2]:.1f} s"
             "<br>gpu_mem %{customdata[3]:.2f} GiB<br>score %{customdata[4]:.3f}<extra>%{fullData.name}</extra>")
    for colour, fam in zip(_palette(len(families)), families):
        part = ranked[ranked["family"] == fam]
        fig.add_trace(go.Scatter(
            x=part[cost], y=part["error_rate"], mode="markers", name=fam, marker={"size": 9, "color": colour},
            customdata=part[["model", "config", "fit_time", "gpu_mem", "score"]].to_numpy(), hovertemplate=hover))
    line = ranked[front].sort_values(cost)
    fig.add_trace(go.Scatter(x=line[cost], y=line["error_rate"], mode="lines", name="Pareto front",
                             line={"color": "black", "dash": "dash", "width": 1}, hoverinfo="skip"))
    fig.update_layout(title=f"{dataset}: error rate against {COST_LABELS[cost]}", xaxis_title=COST_LABELS[cost],
                      yaxis_title="error rate", height=520, legend={"title": "family (click to hide)"},
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def slice_plot(runs: pd.DataFrame, axis: str, metric: str, dataset: str, log_x: bool) -> Any:
    """Every run's ``metric`` against a sampled axis (lr: log x), one colour per family."""
    import plotly.graph_objects as go

    fig = go.Figure()
    families = sorted(runs["family"].unique())
    hover = (f"<b>%{{customdata[0]}}</b><br>%{{customdata[1]}}<br>{axis} %{{x:.4g}}<br>{metric} %{{y:.4f}}"
             f"<extra>%{{fullData.name}}</extra>")
    for colour, fam in zip(_palette(len(families)), families):
        part = runs[runs["family"] == fam]
        fig.add_trace(go.Scatter(x=part[axis], y=part[metric], mode="markers", name=fam,
                                 marker={"size": 7, "color": colour, "opacity": 0.8},
                                 customdata=part[["model", "config"]].to_numpy(), hovertemplate=hover))
    fig.update_layout(title=f"{dataset}: {metric} against {axis}", xaxis_title=axis + (" (log scale)" if log_x else ""),
                      yaxis_title=metric, height=440, legend={"title": "family (click to hide)"},
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def chart_html(fig: Any, first: bool) -> str:
    """A chart as an HTML fragment; the first of a page carries plotly.js itself (offline, no CDN)."""
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False,
                       config={"displaylogo": False, "responsive": True})
