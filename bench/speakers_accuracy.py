"""How well `syncnet speakers` tells the speaking face from a silent one, on real clips.

    python bench/speakers_accuracy.py CLIP... [--model M] [--out DIR] [--threshold T]

For each real clip A (a face speaking its own audio) and the next clip B in the list, two
side-by-side videos are made, both halves scaled to 256 px high, with A's audio:
- "still": B's first frame held for the whole clip (a face that does not move: the easy case);
- "other": B's own frames (a face that talks, but not this audio: what dialogue and dubbing give).
Each goes through `detect_speakers` at the given threshold (default: the model's calibrated one)
and the script prints, per video, the fraction of A's frames called speaking (want: high) and of
B's (want: low), then the medians, and the threshold that would best have separated the two faces'
smoothed confidences on these videos (calibration.fit_threshold over all frames, with its Youden's
J) - to compare with the one `syncnet calibrate` fitted.

The clips must be speakers the model never trained on (docs/training.md lists the held-out ones).
"""

import argparse
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from syncnet import hyperparameters as hp  # noqa: E402
from syncnet.calibration import error_rates, fit_threshold  # noqa: E402
from syncnet.loading import load_model  # noqa: E402
from syncnet.speakers import detect_speakers, speaking_threshold  # noqa: E402
from syncnet.video import load_media  # noqa: E402

HEIGHT = 256


def scaled(frame: np.ndarray) -> np.ndarray:
    width = round(frame.shape[1] * HEIGHT / frame.shape[0] / 2) * 2
    return np.asarray(Image.fromarray(frame).resize((width, HEIGHT), Image.BILINEAR))


def write_side_by_side(speaking, other, path, still: bool):
    """speaking's frames (left) beside other's (right; its first frame only if `still`), with
    speaking's 16 kHz audio, as h264 + AAC at 25 fps."""
    media, partner = load_media(speaking), load_media(other)
    right = [scaled(frame) for frame in partner.frames(0, 1 if still else partner.num_frames)]
    with av.open(str(path), "w") as container:
        video, audio = None, container.add_stream("aac", rate=hp.AUDIO_SAMPLE_RATE)
        audio.layout = "mono"
        for index, frame in enumerate(media.frames()):
            image = np.concatenate([scaled(frame), right[0 if still else index % len(right)]], axis=1)
            if video is None:
                video = container.add_stream("h264", rate=Fraction(hp.VIDEO_FPS))
                video.width, video.height, video.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        samples = (np.clip(media.audio, -1, 1) * 32767).astype(np.int16)[None]
        chunk = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        chunk.sample_rate = hp.AUDIO_SAMPLE_RATE
        container.mux(audio.encode(chunk))
        container.mux(audio.encode())
        return scaled(next(iter(media.frames(0, 1)))).shape[1]  # the left half's width


def halves(result, left_width):
    """(the left face's track, the right face's track): the longest track on each side."""
    sides = {"left": [], "right": []}
    for track in result.tracks:
        centre = np.nanmedian((track.boxes[:, 0] + track.boxes[:, 2]) / 2)
        sides["left" if centre < left_width else "right"].append(track)
    pick = lambda tracks: max(tracks, key=lambda t: t.end_frame - t.start_frame, default=None)  # noqa: E731
    return pick(sides["left"]), pick(sides["right"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threshold", type=float, default=None, help="default: the model's calibrated one")
    parser.add_argument("--out", default=None, help="keep the side-by-side videos here")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    threshold = speaking_threshold(model) if args.threshold is None else args.threshold
    out = Path(args.out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    rows, confidences = [], {"speaking": [], "silent": []}
    for index, clip in enumerate(args.clips):
        partner = args.clips[(index + 1) % len(args.clips)]
        for kind in ("still", "other"):
            path = out / f"{Path(clip).stem}__{kind}.mp4"
            left_width = write_side_by_side(clip, partner, path, still=kind == "still")
            try:
                result = detect_speakers(path, model, threshold=threshold)
            except ValueError as error:
                print(f"{path.name}: {error}", file=sys.stderr)
                continue
            left, right = halves(result, left_width)
            if left is None or right is None:
                print(f"{path.name}: a face was not tracked (left {left is not None}, right {right is not None})", file=sys.stderr)
                continue
            rows.append((path.name, kind, left.speaking_fraction, right.speaking_fraction))
            confidences["speaking"].append(left.confidence[np.isfinite(left.confidence)])
            confidences["silent"].append(right.confidence[np.isfinite(right.confidence)])
            print(f"{path.name:70s} speaking face {left.speaking_fraction:5.2f}  silent face {right.speaking_fraction:5.2f}", flush=True)
    for kind in ("still", "other"):
        chosen = [row for row in rows if row[1] == kind]
        if chosen:
            print(
                f"{kind}: {len(chosen)} videos; median fraction called speaking: speaking face "
                f"{np.median([r[2] for r in chosen]):.2f}, silent face {np.median([r[3] for r in chosen]):.2f}; "
                f"speaking face called speaking for most of its frames and the silent one for under a quarter in "
                f"{sum(r[2] > 0.5 and r[3] < 0.25 for r in chosen)} of {len(chosen)}"
            )
    if rows:
        # the fit `syncnet calibrate` makes (best balanced accuracy), on these videos' frames
        speaking, silent = np.concatenate(confidences["speaking"]), np.concatenate(confidences["silent"])
        best = fit_threshold(speaking, silent)
        speaking_below, silent_above = error_rates(speaking, silent, np.array([best]))
        print(
            f"threshold {threshold:.3f}; the best separating threshold on these frames: {best:.3f} "
            f"(J = {1 - speaking_below[0] - silent_above[0]:.2f})"
        )


if __name__ == "__main__":
    main()
