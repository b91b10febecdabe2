"""Offset accuracy, the figure `syncnet evaluate` and `syncnet train` report, on embeddings whose
answer is known."""

import math

import numpy as np

from syncnet.evaluation import embedded_offset_accuracy


def _segment(windows=80, dim=8, shift=0, seed=0):
    """Visual embeddings of `windows` windows, and audio embeddings whose window i + shift matches visual window i."""
    audio = np.random.default_rng(seed).normal(size=(windows + shift, dim))
    return audio[shift : shift + windows], audio[:windows]


def test_aligned_embeddings_score_every_window_and_a_shift_scores_none():
    assert embedded_offset_accuracy([_segment()]) == {1: 1.0, 15: 1.0}
    shifted = [_segment(shift=5)]
    assert embedded_offset_accuracy(shifted) == {1: 0.0, 15: 0.0}
    assert embedded_offset_accuracy(shifted, tolerance=5) == {1: 1.0, 15: 1.0}


def test_segments_too_short_for_the_search_do_not_count():
    short = _segment(windows=30)  # 31 windows are needed for one centre at vshift 15
    assert all(math.isnan(value) for value in embedded_offset_accuracy([short]).values())
    assert embedded_offset_accuracy([short, _segment(seed=1)]) == {1: 1.0, 15: 1.0}
