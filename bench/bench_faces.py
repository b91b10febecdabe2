"""Frames/s of face tracking (detection + landmarks) and of cropping, per video size.

    python bench/bench_faces.py [--seconds 4] [--clip PATH ...]

Clips: synthetic talking heads at 224x224 and 1280x720 (tests/synthetic.py; the 720p one is a wide
shot, the face about 130 px wide), plus any real clips passed with --clip. Each stage is timed on its
own over the decoded frames held in memory (grayscale for the tracking, RGB for the crops, as
score_video decodes them), and decoding (grayscale) is timed separately. Frames per CPU second of
this process, all its threads: the tracking's threads overlap, so its wall-clock time is shorter
(bench_scoring.py times that).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic import write_clip, write_frames  # noqa: E402

from syncnet.faces import crop_tracks, find_face_tracks  # noqa: E402
from syncnet.video import load_media  # noqa: E402


def wide_shot(path, close_up_path, size=(1280, 720)):
    """The close-up clip pasted into the left third of a larger grey frame."""
    media = load_media(close_up_path)

    def frames():
        for face in media.frames():
            frame = np.full((size[1], size[0], 3), 110, np.uint8)
            top, left = (size[1] - face.shape[0]) // 2, size[0] // 3
            frame[top : top + face.shape[0], left : left + face.shape[1]] = face
            yield frame

    write_frames(path, frames(), audio=media.audio)


def timed(function):
    """The result and the CPU seconds this process spent on it: on a shared machine the wall clock
    also counts other people's work (tracking and cropping are single-threaded)."""
    start = time.process_time()
    result = function()
    return result, time.process_time() - start


def bench(name, path):
    media = load_media(path)
    gray, decode_seconds = timed(lambda: list(media.frames(gray=True)))
    frames = list(media.frames())
    result, track_seconds = timed(lambda: find_face_tracks(gray))
    covered = sum(track.end - track.start for track in result.tracks)
    row = [
        f"{name:<28}",
        f"{media.width}x{media.height}",
        f"{len(frames):>5} frames",
        f"tracks {len(result.tracks)}, covered {covered}",
        f"decode {len(frames) / decode_seconds:6.1f} fps",
        f"track {len(frames) / track_seconds:6.1f} fps",
    ]
    for kind in ("mouth", "face"):
        crops, crop_seconds = timed(lambda kind=kind: sum(1 for _ in crop_tracks(frames, result.tracks, kind)))
        row.append(f"{kind} crops {crops / max(crop_seconds, 1e-9):6.1f} fps")
    print(" | ".join(row), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the synthetic clips")
    parser.add_argument("--clip", action="append", default=[], help="a real video to time as well")
    args = parser.parse_args()
    find_face_tracks([np.zeros((64, 64), np.uint8)] * 5)  # loads dlib's models (2-3 s, once per process) outside the clock
    with tempfile.TemporaryDirectory() as folder:
        close_up, face_230, wide = (Path(folder, name) for name in ("close_up_224.mp4", "face_230.mp4", "wide_720p.mp4"))
        write_clip(close_up, seconds=args.seconds, size=(224, 224))
        write_clip(face_230, seconds=args.seconds, size=(230, 230))
        wide_shot(wide, face_230)
        bench("synthetic close-up 224", close_up)
        bench("synthetic wide shot 720p", wide)
    for clip in args.clip:
        bench(Path(clip).name[:28], clip)


if __name__ == "__main__":
    main()
