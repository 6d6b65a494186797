"""The third stage of a search: the pre-screen (``prescreen = {"keep": N}``), when the space sets one.

    prescreen(state)    # state.spec's model choices cut to the best N by LogME; state.original keeps the file's
"""

from __future__ import annotations

from .state import Search


def prescreen(state: Search) -> None:
    state.original = state.spec
    if not state.spec.prescreen:
        return
    from ..prescreen import prescreen as screen_models

    state.spec, state.screen = screen_models(state.spec, state.run_dir, state.restoring, state.echo)
    state.notes += state.screen.lines()
