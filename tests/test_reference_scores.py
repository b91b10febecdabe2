"""The default expert's scores of a few shared real clips against tests/data/reference_scores.json
(written by tests/reference_scores.py): the guard for refactors and for tracking / decoding speed-ups.

Equal: status, frame and face-track counts, each track's offset and verdict. Within tolerance:
LSE-D (0.5 %) and LSE-C (0.03 absolute): a face tracker that carries the box between detections
places the crops a fraction of a pixel differently, which moves the distances in the third decimal.
"""

import json

import pytest

from reference_scores import CLIPS, REFERENCE, summary
from shared_data import shared_clip

LSE_D_RELATIVE = 0.005
LSE_C_ABSOLUTE = 0.03


@pytest.fixture(scope="module")
def model():
    from syncnet import load_model

    return load_model()


@pytest.mark.parametrize("pattern", CLIPS)
def test_scores_match_the_reference(pattern, model):
    from syncnet import score_video

    clip = shared_clip(pattern)
    expected = json.loads(REFERENCE.read_text())[pattern]
    got = summary(score_video(clip, model))

    for key in ("status", "error", "frames", "face_tracks", "offset_frames", "in_sync", "warnings"):
        assert got[key] == expected[key], key
    assert len(got["tracks"]) == len(expected["tracks"])
    for track, reference in zip(got["tracks"], expected["tracks"]):
        for key in ("track_id", "start_frame", "frames", "offset_frames", "in_sync"):
            assert track[key] == reference[key], (track["track_id"], key)
        assert track["min_dist"] == pytest.approx(reference["min_dist"], rel=LSE_D_RELATIVE)
        assert track["confidence"] == pytest.approx(reference["confidence"], abs=LSE_C_ABSOLUTE)
        assert (track["tampered"] is None) == (reference["tampered"] is None)
