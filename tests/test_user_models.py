"""A user's own architectures (``@register_model``) in a search: ``imports = [...]`` in the space file.

The trials run in Ray's workers, which never run the space file: a model registered there would pass
the driver's checks and fail in every trial. So the space names the modules to import, Ray ships their
files to the workers (runtime_env py_modules, as on a cluster), and a model registered anywhere else is
refused before Ray starts.
"""

from __future__ import annotations

import textwrap

import pytest
import ray

from tunekit.errors import TunekitError
from tunekit.spec import load_spec
from tunekit.tuner import search

MODULE = '''
import timm
from timm.models import register_model


@register_model
def {name}(pretrained=False, **kwargs):
    """test_resnet under a name of the user's own"""
    return timm.models.resnet.test_resnet(pretrained=pretrained, **kwargs)
'''


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_model_registered_in_an_imported_module_trains_in_the_trials(small_shapes, tmp_path):
    assert not ray.is_initialized()  # the search starts its own Ray, shipping the module with it
    models = tmp_path / "space"
    models.mkdir()
    write(models, "my_models.py", MODULE.format(name="my_tiny_resnet"))
    space = write(models, "mine.py", f"""
        data = "folder:{small_shapes}"
        imports = ["my_models"]
        epochs = 1
        space = {{"model": "my_tiny_resnet", "pretrained": False, "batch_size": 32, "img_size": 32}}
    """)
    result = search(space, storage_path=tmp_path / "runs", echo=lambda line: None)
    (row,) = result.trials.to_dict("records")
    assert row["status"] == "completed" and row["model"] == "my_tiny_resnet", row
    assert not ray.is_initialized()


def test_a_model_the_workers_cannot_build_is_refused_before_ray_starts(tmp_path):
    here = write(tmp_path, "inline.py", MODULE.format(name="my_inline_resnet") + """
data = "shapes"
space = {"model": "my_inline_resnet", "pretrained": False}
""")
    with pytest.raises(TunekitError, match="model 'my_inline_resnet' is registered in the space file itself, which "
                                           "the trials' workers do not run: put it in a module beside"):
        load_spec(here)
    write(tmp_path, "other_models.py", MODULE.format(name="my_other_resnet"))
    unlisted = write(tmp_path, "unlisted.py", """
        import other_models  # imported by the file, not named in imports
        data = "shapes"
        space = {"model": "my_other_resnet", "pretrained": False}
    """)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(TunekitError, match="registered in module 'other_models', which the trials' workers"):
            load_spec(unlisted)
    finally:
        sys.path.remove(str(tmp_path))
    missing = write(tmp_path, "missing.py", """
        imports = ["no_such_models"]
        space = {"model": "test_resnet"}
    """)
    with pytest.raises(TunekitError, match="imports: module 'no_such_models' cannot be imported"):
        load_spec(missing)
    with pytest.raises(TunekitError, match="imports must be a list of module names"):
        load_spec(write(tmp_path, "bad.py", 'imports = "my_models"\nspace = {"model": "test_resnet"}\n'))
