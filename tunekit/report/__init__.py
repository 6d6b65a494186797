"""The scoring report: finished (or interrupted) searches -> ranked backbones, effects, plots.

    report = build(load_sources(["~/ray_results/pets", "study.csv"]))
    write(report, Path("report/"))        # report.md, report.html, results.csv, ranking.csv, effects.csv, ...

``load`` reads run folders (through ``runfolder``, no Ray) and CSV files into one row per run;
``study`` has the study's rules (families, ranking, Pareto fronts); ``estimates`` estimates what each
searched setting did and how much it matters (its ``effects`` and ``importance``), only where the runs
support it; ``analysis`` builds the whole report; ``render`` writes its files (``plots``: the PNGs,
``charts``: the interactive ones in report.html).
"""

from __future__ import annotations

from .analysis import Report, build, side_by_side
from .estimates import AXES, comparable, effects, importance
from .load import load_csv, load_run, load_screens, load_sources
from .render import terminal_summary, write
from .study import SCORE_CONSTANT, family, pareto, ranking

__all__ = ["AXES", "SCORE_CONSTANT", "Report", "build", "comparable", "effects", "family", "importance",
           "load_csv", "load_run", "load_screens", "load_sources", "pareto", "ranking", "side_by_side",
           "terminal_summary", "write"]
