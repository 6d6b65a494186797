"""The report's files: report.md, report.html, results.csv, ranking.csv, PNG plots, TensorBoard images.

    write(build(runs), Path("report/"))
    terminal_summary(report)        # the short ranked table a command prints
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import runfolder
from ..runfolder import Status
from .analysis import Report, pareto, side_by_side
from .analysis import label as config_label


def write(report: Report, out: Path, tensorboard_dir: Path | None = None) -> list[Path]:
    """Write report.md, report.html, results.csv, ranking.csv and the PNG plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "ranking.csv"]
    report.runs.to_csv(written[0], index=False)
    report.ranking.to_csv(written[1], index=False)
    plots = _plots(report, out)
    blocks = _blocks(report, plots)
    (out / "report.md").write_text(_markdown(blocks))
    (out / "report.html").write_text(_html(blocks))
    written += [out / "report.md", out / "report.html", *plots.values()]
    if tensorboard_dir is not None and plots:
        _tensorboard_images(plots, tensorboard_dir)
    return written


def terminal_summary(report: Report, n: int = 10) -> list[str]:
    lines = []
    for dataset, parts in report.sections.items():
        top = parts["top"].head(n)
        if top.empty:
            continue
        lines.append(f"{dataset}: top {len(top)} by score = error_rate * (fit_time + {report.constant:g})")
        show = top[["rank", "model", "family", "error_rate", "fit_time", "gpu_mem", "score"]]
        lines += ["  " + line for line in show.to_string(index=False, float_format=_fmt).splitlines()]
    counts = report.runs["status"].astype(str).value_counts()
    lines.append("runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return lines


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else "-" if isinstance(v, float) else str(v)


def _plots(report: Report, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, Path] = {}
    for dataset in report.sections:
        pt = report.ranking[report.ranking["dataset"] == dataset]
        for x, label in (("fit_time", "fit time (s)"), ("gpu_mem", "peak GPU memory (GiB)")):
            if pt[x].notna().sum() < 1:
                continue
            fig, ax = plt.subplots(figsize=(8, 5.5))
            for i, (fam, part) in enumerate(pt.groupby("family")):
                ax.scatter(part[x], part["error_rate"], label=fam, color=plt.cm.tab20(i % 20), s=36)
            front = pt[pareto(pt, x)].sort_values(x)
            ax.plot(front[x], front["error_rate"], "k--", lw=1, label="Pareto front")
            for _, r in front.iterrows():
                ax.annotate(r["model"], (r[x], r["error_rate"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set(xlabel=label, ylabel="error rate", title=f"{dataset}: error rate against {label}")
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            path = out / f"error_vs_{x}_{_slug(dataset)}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            plots[f"{dataset}: error rate against {label}"] = path
    curves = _best_curves(report.runs)
    if curves:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, history in curves:
            ax.plot(history["epoch"], history["error_rate"], marker="o", ms=3, label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(xlabel="epoch", ylabel="error rate", title="learning curves of the best trials")
        ax.legend(fontsize=7)
        fig.tight_layout()
        plots["learning curves of the best trials"] = out / "learning_curves.png"
        fig.savefig(plots["learning curves of the best trials"], dpi=110)
        plt.close(fig)
    overall = report.effects[report.effects["family"] == "all"] if not report.effects.empty else pd.DataFrame()
    if not overall.empty:
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(overall)))
        labels = [f"{r.axis}: {r['from']} -> {r.to} " + (f"(n={r.pairs}" if r.pairs else "(unpaired")
                  + f"; {r.basis})" for _, r in overall.iterrows()]
        colors = ["tab:blue" if b == "the completed runs" else "tab:orange" for b in overall["basis"]]
        ax.barh(labels, overall["mean_diff"], xerr=overall["std"].fillna(0), color=colors)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(xlabel="change in error rate (negative: better)", title="effect of each searched axis")
        fig.tight_layout()
        plots["axis effects"] = out / "effects.png"
        fig.savefig(plots["axis effects"], dpi=110)
        plt.close(fig)
    return plots


def _best_curves(runs: pd.DataFrame, n: int = 8) -> list[tuple[str, pd.DataFrame]]:
    if "path" not in runs:
        return []
    ranked = runs.dropna(subset=["path", "error_rate"]).sort_values("error_rate").head(n)
    out = []
    for _, row in ranked.iterrows():
        history = runfolder.read_progress(Path(row["path"]))
        if not history.empty and "error_rate" in history:
            knobs = [f"{k}={config_label(row[k])}" for k in ("pool", "resize", "lr", "zero_init")
                     if pd.notna(row.get(k))]
            out.append((" ".join([str(row["model"]), *knobs]), history))
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(text))


def _blocks(report: Report, plots: dict[str, Path]) -> list[tuple[str, Any]]:
    """The report as (kind, content) blocks: h1/h2/p/table/img, rendered to Markdown and HTML."""
    b: list[tuple[str, Any]] = [("h1", "tunekit report")]
    runs = report.runs
    counts = runs["status"].astype(str).value_counts()
    b.append(("p", f"{len(runs)} runs from {runs['run'].nunique()} source(s): "
                   + ", ".join(f"{v} {k}" for k, v in counts.items())
                   + f". Score = error_rate * (fit_time + {report.constant:g}); lower is better. "
                   "Per model, the minimum error rate, fit time and GPU memory over its completed runs "
                   "(the study's rule; runs stopped early are left out, their fit times not being comparable)."))
    unranked = sorted(set(runs["model"]) - set(report.ranking["model"]))
    if unranked:
        b.append(("p", f"Not ranked (no completed run): {', '.join(map(str, unranked))}."))
    cols = ["rank", "family", "model", "error_rate", "fit_time", "gpu_mem", "score", "pareto"]
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
        if not parts["repeats"].empty:
            b.append(("p", "Repeated configurations (seeds): error rate mean, std and min:"))
            b.append(("table", parts["repeats"]))
        for title, path in plots.items():
            if title.startswith(f"{dataset}:"):
                b.append(("img", (title, path)))
    if not report.effects.empty:
        b.append(("h2", "What each searched axis did"))
        b.append(("p", "Paired differences in error rate between runs equal in every other setting "
                       "(negative: the 'to' value is better); per family and overall, with counts. Where no "
                       "runs pair up (random search), the difference of the mean error rates, marked unpaired. "
                       "Basis: the completed runs and, when ASHA stopped trials early, every trial at ASHA's "
                       "first rung, where all had trained the same epochs."))
        b.append(("table", report.effects))
        if "axis effects" in plots:
            b.append(("img", ("axis effects", plots["axis effects"])))
    if not report.importance.empty:
        b.append(("h2", "Parameter importance"))
        b.append(("p", f"Optuna's fANOVA importance of each searched setting for the error rate (sums to 1), "
                       f"over {report.importance.name.split('(')[-1].rstrip(')')}."))
        b.append(("table", report.importance.rename_axis("setting").reset_index()))
    if report.asha:
        a = report.asha
        b.append(("h2", "Early stopping (ASHA)"))
        b.append(("p", f"{a['stopped_early']} of {a['trials']} trials stopped early; {a['epochs_run']} epochs run "
                       f"against {a['epochs_if_all_ran']} had every trial run to the end ({a['share']:.0%})."))
    if not report.rank_agreement.empty:
        b.append(("h2", "Do the datasets agree?"))
        b.append(("p", "Spearman correlation of the model ranks between datasets, over the models ranked on both:"))
        b.append(("table", report.rank_agreement))
        b.append(("table", side_by_side(report.ranking).reset_index()))
    if "learning curves of the best trials" in plots:
        b.append(("h2", "Learning curves"))
        b.append(("img", ("learning curves of the best trials", plots["learning curves of the best trials"])))
    bad = runs[runs["status"].isin([Status.ERRORED.value, Status.DIVERGED.value])]
    if not bad.empty:
        b.append(("h2", "Errored and diverged runs"))
        b.append(("table", bad[[c for c in ("trial", "model", "status", "error") if c in bad]]))
    return b


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
        elif kind == "img":
            title, path = content
            out.append(f"![{title}]({path.name})\n")
    return "\n".join(out)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_"
    cells = [[_fmt(v) if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def _html(blocks: list[tuple[str, Any]]) -> str:
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "table":
            body.append(content.to_html(index=False, float_format=_fmt, na_rep="-", border=0, classes="t")
                        if not content.empty else "<p><em>(none)</em></p>")
        elif kind == "img":
            title, path = content
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
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
