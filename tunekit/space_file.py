"""Running a space file: its Python (``run_space``: the settings it defines, an error in it named with its line)
and the modules it ``imports`` (a user's models: imported here, and shipped by Ray to every node)."""

from __future__ import annotations

import runpy
import traceback
import types
from pathlib import Path
from typing import Any

from .errors import TunekitError

RUN_NAME = "__tunekit_space__"  # the space file's module name while it runs


def import_modules(names: list[str], folder: Path | None, where: str = "imports") -> None:
    """Import a space's ``imports`` (from the space file's folder, else the usual path), so models they
    register are known here as they will be in every trial."""
    import importlib
    import sys

    for name in names:
        added = folder is not None and str(folder.resolve()) not in sys.path
        if added:
            sys.path.insert(0, str(folder.resolve()))
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any error in the user's module, named
            raise TunekitError(f"{where}: imports: module {name!r} cannot be imported ({type(e).__name__}: {e}); "
                               f"it is looked for beside the space file, then on the Python path") from None
        finally:
            if added:
                sys.path.remove(str(folder.resolve()))


def module_files(names: list[str]) -> list[str]:
    """The files (a module) or folders (a package) of imported ``names``' top-level packages: what
    Ray ships to every node (runtime_env py_modules) so trials can import them there."""
    import sys

    out = []
    for top in dict.fromkeys(name.split(".")[0] for name in names):
        module = sys.modules[top]
        paths = list(getattr(module, "__path__", []))
        out.append(paths[0] if paths else module.__file__)
    return out


def run_space(path: Path) -> dict[str, Any]:
    """The settings a space file defines (lower-case names that are not modules, functions or classes)."""
    try:
        namespace = runpy.run_path(str(path), run_name=RUN_NAME)
    except SyntaxError as e:
        raise TunekitError(f"{e.filename}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any error in the user's file, reported with its line
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path.resolve()
                  or Path(f.filename) == path]
        line = frames[-1].lineno if frames else "?"
        raise TunekitError(f"{path}:{line}: {type(e).__name__}: {e}") from None
    # Settings are lower-case; _private and UPPER_CASE names are the file's own helpers.
    return {
        k: v for k, v in namespace.items()
        if not k.startswith("_") and not k.isupper()
        and not isinstance(v, (types.ModuleType, types.FunctionType, type))
    }
