"""The default expert's scores of a few shared real clips, against two references
(tests/reference_scores.py writes the first):

- tests/data/reference_scores.json: what the code gives now. A refactor must give it unchanged
  (to float rounding).
- tests/data/reference_scores_dense_tracking.json: what it gave before the face tracker carried
  boxes between detections (2026-12-01: a detection near each face on every frame, a whole-frame
  scan every 10). The faster tracker must stay within these bounds of it: the same frames, tracks
  and verdicts; each track starting within a scan interval (25 frames) of where it did; and where a
  track had a clear sync peak (LSE-C >= 0.8), the same offset, LSE-D within 1 % and LSE-C within
  0.03. Tracks without a peak are flat curves whose argmin is noise: their offsets are not compared.
"""

import json

import pytest
from reference_scores import CLIPS, REFERENCE, summary
from shared_data import shared_clip

DENSE_TRACKING = REFERENCE.with_name("reference_scores_dense_tracking.json")
CLEAR_PEAK = 0.8  # LSE-C of the shipped expert: real in-sync clips score 1-2, flat curves 0.2-0.5
LSE_D_RELATIVE = 0.01
LSE_C_ABSOLUTE = 0.03
START_FRAMES = 25  # faces.find_face_tracks' rescan_every


@pytest.fixture(scope="module")
def scores():
    """Each clip's summary, scored once for both tests."""
    from syncnet import load_model, score_video

    model, scored = load_model(), {}

    def score(pattern):
        if pattern not in scored:
            scored[pattern] = summary(score_video(shared_clip(pattern), model))
        return scored[pattern]

    return score


def assert_same(got: dict, expected: dict):
    """Equal keys and values, floats to float32 rounding."""
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("pattern", CLIPS)
def test_scores_are_unchanged(pattern, scores):
    expected = json.loads(REFERENCE.read_text())[pattern]
    got = scores(pattern)
    assert_same({**got, "tracks": None}, {**expected, "tracks": None})
    for track, reference in zip(got["tracks"], expected["tracks"], strict=True):
        assert_same(track, reference)


@pytest.mark.parametrize("pattern", CLIPS)
def test_scores_stay_near_the_dense_tracking(pattern, scores):
    expected = json.loads(DENSE_TRACKING.read_text())[pattern]
    got = scores(pattern)
    for key in ("status", "frames", "face_tracks", "in_sync"):
        assert got[key] == expected[key], key
    for track, reference in zip(got["tracks"], expected["tracks"], strict=True):
        assert abs(track["start_frame"] - reference["start_frame"]) < START_FRAMES, track["track_id"]
        if reference["confidence"] >= CLEAR_PEAK:
            assert track["offset_frames"] == reference["offset_frames"], track["track_id"]
            assert track["min_dist"] == pytest.approx(reference["min_dist"], rel=LSE_D_RELATIVE)
            assert track["confidence"] == pytest.approx(reference["confidence"], abs=LSE_C_ABSOLUTE)
