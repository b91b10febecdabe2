"""What `syncnet score` gives the default expert on a handful of shared real clips, kept as a
reference: refactors must leave it unchanged, tracking or decoding speed-ups must stay within the
tolerances of test_reference_scores.py.

    python tests/reference_scores.py     # rewrite tests/data/reference_scores.json (say why in the commit)

reference_scores_dense_tracking.json was written the same way before the face tracker carried boxes
(commit b5c624a); it stays as it is.

Only numbers are stored, never footage. The clips: syncnet_python's demo and its 12-frame delay,
two 720p one-face clips, a two-face clip, a crowded wild clip, a multi-face clip with cuts, a
VoxCeleb crop.
"""

import json
import os
import sys
from pathlib import Path

CLIPS = (
    "*Syncnet_FCN__data_example.avi",
    "*demo_output_test_offset_12.avi",
    "*termProject__interview.mp4",
    "*SkyReels-A1__assets_driving_video_5.mp4",
    "*obama_curry.mp4",
    "*dark_labels_00001.mp4",
    "*short_hamilton_clip.mp4",
    "*Audio_Source_681100216.mp4",
)
REFERENCE = Path(__file__).with_name("data") / "reference_scores.json"
TRACK_KEYS = ("track_id", "start_frame", "frames", "offset_frames", "min_dist", "confidence", "in_sync", "tampered")
RESULT_KEYS = ("status", "error", "offset_frames", "min_dist", "confidence", "in_sync", "tampered", "frames", "face_tracks", "warnings")


def summary(result) -> dict:
    """The reference's view of a ScoreResult: the verdict's numbers, per video and per track."""
    full = result.to_dict()
    return {**{key: full[key] for key in RESULT_KEYS}, "tracks": [{key: track[key] for key in TRACK_KEYS} for track in full["tracks"]]}


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).parent))
    from shared_data import SHARED_DATA

    from syncnet import load_model, score_video

    model = load_model()
    reference = {}
    for pattern in CLIPS:
        clip = next(iter(sorted((SHARED_DATA / "clips").glob(pattern))))
        reference[pattern] = summary(score_video(clip, model))
        print(pattern, json.dumps(reference[pattern])[:200], flush=True)
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main()
