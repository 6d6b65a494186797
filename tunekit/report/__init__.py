"""The scoring report: finished (or interrupted) searches -> ranked backbones, effects, plots.

    report = build(load_sources(["~/ray_results/pets", "study.csv"]))
    write(report, Path("report/"))        # report.md, report.html, results.csv, ranking.csv, *.png

``load`` reads run folders (through ``runfolder``, no Ray) and CSV files into one row per run;
``analysis`` ranks and compares; ``render`` writes the files and the terminal summary.
"""

from __future__ import annotations

from .analysis import (
           AXES,
           SCORE_CONSTANT,
           Report,
           build,
           comparable,
           effects,
           family,
           importance,
           pareto,
           ranking,
           side_by_side,
)
from .load import load_csv, load_run, load_sources
from .render import terminal_summary, write

__all__ = ["AXES", "SCORE_CONSTANT", "Report", "build", "comparable", "effects", "family", "importance",
           "load_csv", "load_run", "load_sources", "pareto", "ranking", "side_by_side", "terminal_summary", "write"]
