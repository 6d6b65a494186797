"""The report's files: report.md, report.html, results.csv, ranking.csv, effects.csv, importance.csv,
PNG plots, TensorBoard images; and the terminal summary.

    write(build(runs), Path("report/"))
    terminal_summary(report)        # the short ranked table a command prints

report.md shows the PNGs (``plots``); report.html is one self-contained file that opens offline,
with the interactive charts (``charts``: plotly.js inlined once) in place of the PNGs.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..runfolder import Status
from .analysis import Report, side_by_side
from .charts import COST_LABELS, chart_html, config_text, imagenet_chart
from .charts import error_vs_cost as error_vs_cost_chart
from .charts import slice_plot as slice_chart
from .estimates import LOG_AXES, axis_kinds, comparable
from .plots import effects_plot, imagenet_plot, learning_curves
from .plots import error_vs_cost as error_vs_cost_png
from .plots import slice_plot as slice_png
from .study import family, pareto

REPEATS_SHOWN = 30  # rows of the repeats table in the report (all of them are in results.csv)


@dataclass
class Chart:
    """One chart: its PNG (report.md, TensorBoard), its interactive version (report.html), or, when
    there is nothing to draw, the sentence that says so."""

    title: str
    png: Path | None = None
    figure: Any = None
    empty: str = ""


def write(report: Report, out: Path, tensorboard_dir: Path | None = None) -> list[Path]:
    """Write the report's files into ``out``; with ``tensorboard_dir``, the PNGs as TensorBoard images."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {"results.csv": report.runs, "ranking.csv": report.ranking, "effects.csv": report.effects,
              "importance.csv": report.importance}
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
    found = _charts(report, out)
    blocks = _blocks(report, found)
    (out / "report.md").write_text(_markdown(blocks))
    (out / "report.html").write_text(_html(blocks))
    pngs = [c.png for cs in found.values() for c in cs if c.png is not None]
    if tensorboard_dir is not None and pngs:
        _tensorboard_images({c.title: c.png for cs in found.values() for c in cs if c.png}, tensorboard_dir)
    return [out / name for name in tables] + [out / "report.md", out / "report.html", *pngs]


def terminal_summary(report: Report, n: int = 10) -> list[str]:
    lines = []
    for dataset, parts in report.sections.items():
        top = parts["top"].head(n)
        if top.empty:
            continue
        t = report.time_basis
        lines.append(f"{dataset}: top {len(top)} by score = error_rate * ({t} + {report.constant:g})")
        show = top[["rank", "model", "family", "error_rate", *dict.fromkeys(["fit_time", t]), "gpu_mem", "score"]]
        lines += ["  " + line for line in show.to_string(index=False, float_format=_fmt).splitlines()]
    counts = report.runs["status"].astype(str).value_counts()
    lines.append("runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return lines


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else "-" if isinstance(v, float) else str(v)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(text))


def _charts(report: Report, out: Path) -> dict[str, list[Chart]]:
    """The charts of each section: per dataset the study's two charts and the slice plots; then the
    effects and the learning curves ("" keys)."""
    runs = report.runs.assign(family=report.runs["model"].map(family))
    runs["config"] = [config_text(row) for _, row in runs.iterrows()]
    found: dict[str, list[Chart]] = {}
    for dataset, parts in report.sections.items():
        ranked = _with_config(parts["all"], runs[runs["dataset"] == dataset])
        found[dataset] = []
        for cost in (report.time_basis, "gpu_mem"):
            title = f"{dataset}: error rate against {COST_LABELS[cost]}"
            front = pareto(ranked, cost)
            png = error_vs_cost_png(ranked, cost, dataset, front, out / f"error_vs_{cost}_{_slug(dataset)}.png")
            if png is None:
                what = COST_LABELS[cost]
                found[dataset].append(Chart(title, empty=f"{dataset}: {what} was 0 or missing in every run (a CPU "
                                                         f"run measures none), so there is no chart of it."))
            else:
                found[dataset].append(Chart(title, png, error_vs_cost_chart(ranked, cost, dataset, front)))
        data, basis = comparable(runs[runs["dataset"] == dataset])
        data = data.dropna(subset=["error_rate"])
        for axis, kind in axis_kinds(runs, within=data).items():
            if kind == "continuous":
                title = f"{dataset}: error rate against {axis} ({basis})"
                png = slice_png(data, axis, "error_rate", dataset, out / f"slice_{axis}_{_slug(dataset)}.png")
                found[dataset].append(Chart(title, png, slice_chart(data, axis, "error_rate", dataset,
                                                                          log_x=axis in LOG_AXES)))
        transfer = report.transfer.get(dataset)
        if transfer is not None:
            png = imagenet_plot(transfer.models, dataset, out / f"imagenet_vs_finetune_{_slug(dataset)}.png")
            found[dataset].append(Chart(f"{dataset}: {IMAGENET_TITLE}", png, imagenet_chart(transfer.models, dataset)))
    found[""] = []
    png = effects_plot(report.effects, out / "effects.png") if not report.effects.empty else None
    if png is not None:
        found[""].append(Chart("what each searched axis did", png))
    png = learning_curves(report.runs, out / "learning_curves.png")
    if png is not None:
        found[""].append(Chart("learning curves of the best trials", png))
    return found


def _with_config(ranked: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The ranking's rows with the settings of each model's most accurate run (for hover text)."""
    ok = runs.dropna(subset=["error_rate"])
    best = ok.loc[ok.groupby("model")["error_rate"].idxmin(), ["model", "config"]] if len(ok) else \
        pd.DataFrame(columns=["model", "config"])
    return ranked.merge(best, on="model", how="left").fillna({"config": "-"})


def _blocks(report: Report, found: dict[str, list[Chart]]) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks: h1/h2/p/table/chart, rendered to Markdown and HTML."""
    b: list[tuple[str, Any]] = [("h1", "tunekit report")]
    runs = report.runs
    counts = runs["status"].astype(str).value_counts()
    b.append(("p", f"{len(runs)} runs from {runs['run'].nunique()} source(s): "
                   + ", ".join(f"{v} {k}" for k, v in counts.items())
                   + f". Score = error_rate * ({report.time_basis} + {report.constant:g}); lower is better. "
                   "Per model, the minimum error rate, fit time and GPU memory over its completed runs "
                   "(the study's rule; runs stopped early are left out, their fit times not being comparable)."
                   + (" The trials shared GPUs, so each ranks by fit_time_unshared: its work (images x epochs, "
                      "frozen and not, and validation) at the speed its network's steps ran alone on the machine; "
                      "fit_time, measured beside the other trials, is shown too."
                      if report.time_basis != "fit_time" else "")))
    unranked = sorted(set(runs["model"]) - set(report.ranking["model"]))
    if unranked:
        b.append(("p", f"Not ranked (no completed run): {', '.join(map(str, unranked))}."))
    cols = ["rank", "family", "model", "error_rate", *dict.fromkeys(["fit_time", report.time_basis]), "gpu_mem",
            "score", "pareto"]
    for dataset, parts in report.sections.items():
        b.append(("h2", f"{dataset}"))
        top = parts["top"].assign(pareto=_pareto_mark(parts["top"]))
        b.append(("p", "Top 15 by score (pareto: on the error/time (t) or error/memory (m) front):"))
        b.append(("table", top[cols]))
        b.append(("p", "Most accurate at or under the median fit time and GPU memory:"))
        b.append(("table", parts["lean"].assign(pareto=_pareto_mark(parts["lean"]))[cols]))
        b.append(("p", "Most accurate among the leanest quarter (fit time and GPU memory at or under the "
                       "25th percentile):"))
        b.append(("table", parts["leanest"].assign(pareto=_pareto_mark(parts["leanest"]))[cols]))
        repeats = parts["repeats"]
        if not repeats.empty:
            shown = f" (the {REPEATS_SHOWN} best of {len(repeats)}; all in results.csv)" \
                if len(repeats) > REPEATS_SHOWN else ""
            b.append(("p", f"Repeated configurations (seeds): error rate mean, std and min over count runs{shown}:"))
            b.append(("table", repeats.head(REPEATS_SHOWN)))
        b += [("chart", chart) for chart in found.get(dataset, []) if not chart.title.endswith(IMAGENET_TITLE)]
        b += _transfer_blocks(report, dataset, found)
    b += _effect_blocks(report, found)
    if report.asha:
        a = report.asha
        b.append(("h2", "Early stopping (ASHA)"))
        b.append(("p", f"{a['stopped_early']} of {a['trials']} trials stopped early; {a['epochs_run']} epochs run "
                       f"against {a['epochs_if_all_ran']} had every trial run to the end ({a['share']:.0%})."))
    if not report.rank_agreement.empty:
        b.append(("h2", "Do the datasets agree?"))
        b.append(("p", "Spearman correlation of the model ranks between datasets over the models ranked on both, "
                       "with its 95% interval (none from fewer than 5 models):"))
        b.append(("table", report.rank_agreement))
        b.append(("table", side_by_side(report.ranking).reset_index()))
    b += _prescreen_blocks(report)
    curves = [c for c in found.get("", []) if c.title.startswith("learning curves")]
    if curves:
        b.append(("h2", "Learning curves"))
        b += [("chart", c) for c in curves]
    bad = runs[runs["status"].isin([Status.ERRORED.value, Status.DIVERGED.value])]
    if not bad.empty:
        b.append(("h2", "Errored and diverged runs"))
        b.append(("table", bad[[c for c in ("trial", "model", "status", "error") if c in bad]]))
    return b


IMAGENET_TITLE = "fine-tuning against ImageNet accuracy"


def _transfer_blocks(report: Report, dataset: str, found: dict[str, list[Chart]]) -> list[tuple[str, Any]]:
    """The study's first question for one dataset: is timm's ImageNet chart reproduced for fine-tuning?"""
    t = report.transfer.get(dataset)
    if t is None:  # fewer than MIN_MODELS models with an ImageNet top-1, or nothing to rank: nothing to show
        return []
    b: list[tuple[str, Any]] = [("h2", f"{dataset}: is ImageNet accuracy reproduced for fine-tuning?")]
    rho, low, high = t.accuracy
    n = len(t.models)
    text = (f"Over {n} of the {t.ranked or n} ranked models (with an ImageNet top-1 in timm's published table, "
            f"fine-tuned from its weights), the Spearman correlation of "
            f"ImageNet top-1 with fine-tune accuracy (1 - error rate) is {rho:+.2f} (95% interval {low:+.2f} to "
            f"{high:+.2f}, from {n} models; 1: ImageNet ordered them exactly as fine-tuning did).")
    if t.speed is not None:
        s, slow, shigh = t.speed
        text += (f" timm's inference throughput against fit time (faster should fit sooner) over {t.n_speed} models: "
                 f"{s:+.2f} ({slow:+.2f} to {shigh:+.2f}).")
    better = t.models[t.models["verdict"] == "fine-tunes better"]["model"].tolist()
    worse = t.models[t.models["verdict"] == "fine-tunes worse"]["model"].tolist()
    text += (" Outside the prediction interval of a straight line of error on top-1 fitted to the other models, at "
             f"a level of 1 - 0.05/{n} each (so that chance names a model in at most 5% of such reports): fine-tune "
             f"better than their ImageNet accuracy predicts: {', '.join(better) or 'none'}; "
             f"worse: {', '.join(worse) or 'none'}. A model named without a tag is read as the installed timm's "
             f"default tag (the timm tag column says which).")
    if t.left_out:
        text += f" Left out: {'; '.join(t.left_out)}."
    b.append(("p", text))
    shown = t.models[["model", "tag", "top1", "error_rate", "throughput", "fit_time", "verdict"]]
    b.append(("table", shown.rename(columns={"tag": "timm tag", "top1": "ImageNet top-1",
                                             "throughput": "inference img/s (timm)"})))
    b += [("chart", c) for c in found.get(dataset, []) if c.title.endswith(IMAGENET_TITLE)]
    return b


def _prescreen_blocks(report: Report) -> list[tuple[str, Any]]:
    """Per pre-screened search: each model's pre-screen rank beside its fine-tuned rank, and Kendall's tau."""
    b: list[tuple[str, Any]] = []
    for name, agreed in report.prescreen.items():
        rows = pd.DataFrame(agreed["rows"])
        if "tuned_rank" not in rows:
            rows["tuned_rank"] = None
        kept, method = int(rows["kept"].sum()), agreed.get("method", "logme")
        what = {"prior": "ImageNet top-1 in timm's published table (no forward pass)",
                "logme": "LogME (a forward pass each)",
                "hybrid": "the prior's shortlist checked by LogME"}.get(method, method)
        label = {"prior": "the ImageNet prior", "logme": "LogME", "hybrid": "the hybrid"}.get(method, method)
        b.append(("h2", f"Pre-screen: {label} against fine-tuning ({name})"))
        b.append(("p", f"The search fine-tuned the {kept} models of {len(rows)} ranked first by {what}; the others "
                       f"were never fine-tuned, so how well the ranking predicted is measured on the kept ones only. "
                       f"Fine-tuned: each model's best completed error rate."))
        shown = rows[[c for c in ("model", "top1", "logme", "screen_rank", "kept", "error_rate", "tuned_rank")
                      if c in rows]]
        b.append(("table", shown.rename(columns={"error_rate": "best error_rate", "top1": "ImageNet top-1"})))
        if agreed["tau"] is None:
            b.append(("p", f"Too few models fine-tuned to completion ({agreed['n']}) for a rank correlation (3 at "
                           f"least)."))
        else:
            b.append(("p", f"Kendall's tau between the pre-screen's ranks and the fine-tuned ones over the "
                           f"{agreed['n']} models fine-tuned: {agreed['tau']:+.2f} (1: the same order; p = "
                           f"{agreed['p_value']:.2g} against no association, from {agreed['n']} models)."))
    return b


def _effect_blocks(report: Report, found: dict[str, list[Chart]]) -> list[tuple[str, Any]]:
    b: list[tuple[str, Any]] = []
    fx = report.effects
    if not fx.empty:
        b.append(("h2", "What each searched axis did"))
        b.append(("p", "Each estimate is a change in error rate (negative: the first value of the contrast is "
                       "better) with its 95% interval and the runs it rests on. Paired: the mean difference "
                       "between runs equal in every other setting (a grid). Additive model: the difference with "
                       "the backbone and the other settings held fixed (a random search). Trend: the change per "
                       "decade of a setting sampled from a range, drawn against the runs in the slice plots. No "
                       "estimate from fewer than 3 runs per level (or 3 pairs): the row says so instead. Basis: "
                       "the completed runs; when ASHA stopped trials early, first all trials at its first rung, "
                       "where all had trained the same epochs, then the completed runs as ASHA's survivors: "
                       "kept for doing well at the rung, they shrink an effect towards zero (in tunekit's "
                       "simulations by about 40%) and, in a large search, their intervals miss the "
                       "truth more often than they say. All rows are in effects.csv."))
        shown = fx.assign(**{"95% interval": [_interval(r.ci_low, r.ci_high) for r in fx.itertuples()]})
        b.append(("table", shown[["axis", "contrast", "family", "estimate", "95% interval", "n_runs", "method",
                                  "basis"]]))
        b += [("chart", c) for c in found.get("", []) if c.title.startswith("what each")]
    imp = report.importance
    if not imp.empty:
        b.append(("h2", "Which settings matter"))
        b.append(("p", f"Type-II analysis of variance in an additive model (error rate ~ dataset + backbone + "
                       f"searched settings), over {imp['basis'].iloc[0]} ({int(imp['n_runs'].iloc[0])} runs): each "
                       f"setting's share of the variance in error rate beyond all the others, and its F-test (a "
                       f"p-value above 0.05: not distinguishable from noise in these runs). Main effects only; "
                       f"interactions show in the per-family rows above. In importance.csv."))
        b.append(("table", imp[["setting", "share", "F", "p_value", "levels", "n_runs"]]))
    return b


def _interval(low: float, high: float) -> str:
    return "-" if not (np.isfinite(low) and np.isfinite(high)) else f"[{low:.4g}, {high:.4g}]"


def _pareto_mark(df: pd.DataFrame) -> list[str]:
    marks = zip(df.get("pareto_time", []), df.get("pareto_mem", []))
    return [("t" if t else "") + ("m" if m else "") for t, m in marks]


def _markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"## {content}\n")
        elif kind == "p":
            out.append(f"{content}\n")
        elif kind == "table":
            out.append(_md_table(content) + "\n")
        elif kind == "chart":
            out.append(f"![{content.title}]({content.png.name})\n" if content.png else f"{content.empty}\n")
    return "\n".join(out)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"
    cells = [[_fmt(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def _html_chart(chart: Chart, first: bool) -> str:
    """The interactive chart when there is one (plotly.js inlined with the page's first), else the PNG."""
    caption = f"<figcaption>{html.escape(chart.title)}</figcaption>"
    if chart.figure is not None:
        return f'<figure class="chart">{chart_html(chart.figure, first)}{caption}</figure>'
    if chart.png is not None:
        data = base64.b64encode(chart.png.read_bytes()).decode()
        return f'<figure><img alt="{html.escape(chart.title)}" src="data:image/png;base64,{data}">{caption}</figure>'
    return f'<p class="empty">{html.escape(chart.empty)}</p>'


def _html(blocks: list[tuple[str, Any]]) -> str:
    body = []
    interactive = False
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "table":
            body.append(content.to_html(index=False, float_format=_fmt, na_rep="-", border=0, classes="t")
                        if not content.empty else "<p><em>(none)</em></p>")
        elif kind == "chart":
            body.append(_html_chart(content, first=not interactive))
            interactive = interactive or content.figure is not None
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table.t{border-collapse:collapse;font-size:13px;margin:.5em 0 1.5em}"
             "table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
             "table.t th{background:#f4f4f4}img{max-width:100%}figcaption{color:#666;font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tunekit report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _tensorboard_images(plots: dict[str, Path], log_dir: Path) -> None:
    """The plots as TensorBoard image summaries, so `tensorboard --logdir` shows them too."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for title, path in plots.items():
            writer.add_image(title, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
