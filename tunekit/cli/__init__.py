"""The ``tunekit`` command: a thin click layer over the library, a few lines per command.

    tunekit train --data shapes --model test_resnet --no-pretrained --epochs 3
    tunekit search search_spaces/demo.py
    tunekit report ~/ray_results/demo
    tunekit export ~/ray_results/demo best/ && tunekit predict best/ photos/

``run`` (train, search), ``results`` (report, export, predict, evaluate), ``models`` (timm's tables), ``tools``
(rank, bench, data, weights, doctor),
``common`` (errors, options). Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tunekit")
def main() -> None:
    """Which timm backbone, with which recipe, fine-tunes best on your data, for what cost?"""


def _register() -> None:
    from .models import models
    from .results import evaluate, export, predict, report
    from .run import search, train
    from .tools import bench, data, doctor, rank, weights

    for command in (train, search, report, export, predict, evaluate, models, rank, bench, data, weights, doctor):
        main.add_command(command)


_register()


def entry() -> None:
    """The ``tunekit`` command (its console script, ``python -m tunekit.cli``): ``main``, and a process that
    ends as soon as the command has (``_exit``)."""
    from .._exit import skip_final_collections

    skip_final_collections()
    main()


if __name__ == "__main__":
    entry()
