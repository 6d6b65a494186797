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


def imagenet_chart(models: pd.DataFrame, dataset: str) -> Any:
    """Fine-tune error against ImageNet top-1 (``report.transfer``), each model's timm tag, throughput and
    verdict on hover."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for verdict, colour in (("", "#1f77b4"), ("fine-tunes better", "#2ca02c"), ("fine-tunes worse", "#d62728")):
        part = models[models["verdict"] == verdict]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["top1"], y=part["error_rate"], mode="markers", name=verdict or "as ImageNet predicts",
            marker={"size": 9, "color": colour},
            customdata=part[["model", "tag", "fit_time"]].to_numpy(),
            hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]})<br>ImageNet top-1 %{x:.2f}%<br>error_rate "
                          "%{y:.4f}<br>fit_time %{customdata[2]:.1f} s<extra>%{fullData.name}</extra>"))
    fig.update_layout(title=f"{dataset}: fine-tune error against ImageNet top-1", xaxis_title="ImageNet top-1 (%)",
                      yaxis_title="fine-tune error rate", height=480, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                      showlegend=True)  # also with one verdict: the legend says what the points are
    return fig


def chart_html(fig: Any, first: bool) -> str:
    """A chart as an HTML fragment; the first of a page carries plotly.js itself (offline, no CDN)."""
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False,
                       config={"displaylogo": False, "responsive": True})


def prior_chart(rows: list, front: set[str]) -> str:
    """``tunekit models --plot``: ImageNet top-1 against inference throughput (log), one point per tag, the
    Pareto front drawn and highlighted, each point's tag, params and pretrain data on hover; a whole page that
    opens offline (plotly.js inlined)."""
    import plotly.graph_objects as go

    from ..timm_table import source

    shown = [r for r in rows if r.top1 is not None and r.infer_samples_per_s is not None]
    fig = go.Figure()
    for on_front, name, style in ((False, "other tags", {"size": 7, "color": "#9aa5b1"}),
                                  (True, "the front", {"size": 10, "color": "#d62728"})):
        part = sorted((r for r in shown if (r.model in front) == on_front), key=lambda r: r.infer_samples_per_s)
        fig.add_trace(go.Scatter(
            x=[r.infer_samples_per_s for r in part], y=[r.top1 for r in part], name=name,
            mode="lines+markers" if on_front else "markers", marker=style,
            text=[f"{r.model}<br>top-1 {r.top1:.2f}%, {r.infer_samples_per_s:,.0f} img/s at {r.infer_img_size}px"
                  f"<br>{r.params_m if r.params_m is not None else '?'} M params, pretrain {r.pretrain or '?'}"
                  for r in part],
            hoverinfo="text"))
    src = source()
    fig.update_layout(title=f"ImageNet top-1 against inference throughput ({len(shown)} tags; timm's tables, "
                            f"{src['infer']['gpu']}, {src['infer']['precision']})",
                      xaxis_title="inference images/s (log)", yaxis_title="ImageNet top-1 (%)", template="plotly_white")
    fig.update_xaxes(type="log")
    return fig.to_html(full_html=True, include_plotlyjs=True, config={"displaylogo": False, "responsive": True})
