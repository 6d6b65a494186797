"""LogME against values computed once with the authors' reference implementation (thuml/LogME,
LogME.py, the fixed-point path it uses by default), on fixed generated features."""

from __future__ import annotations

import numpy as np
import pytest

from tunekit.logme import logme

# (seed, N, D, classes, signal, multilabel) -> the reference's LogME of case(...) below.
# N > D takes the reference's truncated-SVD path, N < D its full SVD; multilabel is its
# regression mode on the 0/1 label matrix (the mean over labels).
REFERENCE = [
    ((0, 300, 32, 5, 1.0, False), 0.2074060741190089),
    ((1, 300, 32, 5, 0.0, False), -0.6137415078172495),
    ((2, 40, 64, 4, 2.0, False), 3.2004965922996265),
    ((3, 500, 128, 10, 0.5, False), 0.22765506772995087),
    ((4, 200, 16, 3, 3.0, False), 0.8431419356526254),
    ((5, 250, 24, 6, 1.0, True), 0.11410882616596003),
]


def case(seed: int, n: int, d: int, c: int, signal: float, multilabel: bool):
    """Gaussian features plus ``signal`` times a per-class (per-label) direction."""
    rng = np.random.default_rng(seed)
    if multilabel:
        y = (rng.random((n, c)) < 0.3).astype(np.float64)
        f = rng.standard_normal((n, d)) + signal * (y @ rng.standard_normal((c, d)))
    else:
        y = rng.integers(0, c, n)
        f = rng.standard_normal((n, d)) + signal * rng.standard_normal((c, d))[y]
    return f.astype(np.float32), y


@pytest.mark.parametrize("args,expected", REFERENCE)
def test_matches_the_reference_implementation(args, expected):
    f, y = case(*args)
    assert logme(f, y, multilabel=args[-1]) == pytest.approx(expected, abs=1e-6)


def test_features_that_carry_the_labels_score_higher():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    noise = rng.standard_normal((400, 20))
    informative = noise + 2.0 * rng.standard_normal((5, 20))[y]
    assert logme(informative, y) > logme(noise, y) + 0.3


def test_order_of_examples_and_scale_of_labels_do_not_matter():
    f, y = case(0, 300, 32, 5, 1.0, False)
    perm = np.random.default_rng(1).permutation(len(y))
    assert logme(f[perm], y[perm]) == pytest.approx(logme(f, y), abs=1e-9)
    # class ids are names: renaming them permutes the per-class evidences, whose mean is the score
    assert logme(f, (y + 2) % 5) == pytest.approx(logme(f, y), abs=1e-9)


@pytest.mark.parametrize("features,labels,multilabel,message", [
    (np.zeros((1, 4)), np.zeros(1), False, "N >= 2"),
    (np.zeros((5, 4)), np.zeros(4), False, "4 labels for 5"),
    (np.zeros((5, 4)), np.zeros((5, 2)), False, "class ids"),
    (np.zeros((5, 4)), np.zeros(5), True, "(N, C) 0/1"),
])
def test_bad_input_is_named(features, labels, multilabel, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        logme(features, labels, multilabel=multilabel)
