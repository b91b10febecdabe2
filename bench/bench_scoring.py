"""End-to-end `score_video` speed: seconds and x-real-time, split into decode / faces / embed.

    python bench/bench_scoring.py [--presets tiny paper syncnet_v2] [--seconds 10] [--synthetic]

Two clips: a 224 px talking head and a 720p one - real clips from ../shared/data when present
(unless --synthetic), else synthetic ones (tests/synthetic.py) of `--seconds`. Models have random
weights: the speed does not depend on them.

Stages, each timed alone: decode (score_video makes two passes: grayscale frames for the faces, then
RGB for the crops), faces (dlib detection + landmarks, find_face_tracks), crops (crop_tracks), embed
(both towers over every window, batched as score_video batches them; a `lips` model's frame
encoder over every frame once). Then score_video end to end;
x-real-time = clip duration / its seconds (> 1: faster than the clip plays). Other processes on
the machine show in the numbers: the load average is printed first.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from syncnet.faces import crop_tracks, find_face_tracks  # noqa: E402
from syncnet.models import build_model  # noqa: E402
from syncnet.scoring import BATCH_WINDOWS, compiled_towers, score_video  # noqa: E402
from syncnet.video import load_media  # noqa: E402

SHARED_CLIPS = Path(os.environ.get("SYNCNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "clips"
REAL_CLIPS = {  # label -> glob in ../shared/data/clips
    "224px": "*PC-AVS__misc_Input_00098.mp4",  # 9.9 s, 224x224 VoxCeleb crop
    "720p": "*SkyReels-A1__assets_driving_video_5.mp4",  # 4.8 s, 1280x720, one face
}
SYNTHETIC_SIZES = {"224px": (224, 224), "720p": (1280, 720)}


def clips(seconds: float, synthetic: bool, folder: Path) -> dict:
    found = {}
    for label, pattern in REAL_CLIPS.items():
        matches = sorted(SHARED_CLIPS.glob(pattern)) if SHARED_CLIPS.is_dir() and not synthetic else []
        if matches:
            found[label] = matches[0]
        else:
            from synthetic import write_clip

            found[label] = folder / f"synthetic_{label}.mp4"
            write_clip(found[label], seconds=seconds, size=SYNTHETIC_SIZES[label])
    return found


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def embed_seconds(model, num_windows: int) -> float:
    """Both towers over `num_windows` windows in batches of BATCH_WINDOWS, as score_video runs them
    (with a frame encoder: every frame encoded once, then windows of its features)."""
    towers = compiled_towers(model)
    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, (BATCH_WINDOWS, *model.frame_shape[1:])).astype(np.float32)
    features = rng.uniform(0, 255, (BATCH_WINDOWS, *model.feature_shape)).astype(np.float32)
    mfcc = rng.normal(0, 10, (BATCH_WINDOWS, *model.mfcc_shape)).astype(np.float32)
    towers.embed_features(features[:2]), towers.embed_audio(mfcc[:2])  # trace outside the clock
    if towers.encode_frames is not None:
        towers.encode_frames(crops[:2])
    start = time.perf_counter()
    for begin in range(0, num_windows, BATCH_WINDOWS):
        count = min(BATCH_WINDOWS, num_windows - begin)
        if towers.encode_frames is not None:
            towers.encode_frames(crops[:count]).numpy()
        towers.embed_features(features[:count]).numpy(), towers.embed_audio(mfcc[:count]).numpy()
    return time.perf_counter() - start


def bench_clip(path, models: dict, repeats: int) -> list[str]:
    """Each stage timed on its own (frames held in memory here, which score_video never does), then
    score_video end to end: the best of `repeats` calls after a first one, which also pays for
    tracing the MFCC and the head once per process."""
    media, load_seconds = timed(lambda: load_media(path))
    gray_frames, gray_seconds = timed(lambda: list(media.frames(gray=True)))
    frames, rgb_seconds = timed(lambda: list(media.frames()))
    tracking, faces_seconds = timed(lambda: find_face_tracks(gray_frames))
    crop_seconds = {kind: timed(lambda: list(crop_tracks(frames, tracking.tracks, kind)))[1] for kind in ("mouth", "face", "lips")}
    lines = [
        f"{Path(path).name}: {media.width}x{media.height}, {media.duration:.1f} s, {media.num_frames} frames, "
        f"{len(tracking.tracks)} face track(s)",
        f"  stages: open+audio {load_seconds:.2f} s, decode {gray_seconds:.2f} s gray (faces pass) / {rgb_seconds:.2f} s "
        f"RGB (crops pass), faces {faces_seconds:.2f} s ({1000 * faces_seconds / media.num_frames:.1f} ms/frame), "
        f"crops {crop_seconds['mouth']:.2f} s mouth / {crop_seconds['face']:.2f} s face / {crop_seconds['lips']:.2f} s lips",
    ]
    for preset, model in models.items():
        embed = embed_seconds(model, media.num_frames - 5)
        result, first = timed(lambda: score_video(path, model))
        if result.status != "ok":
            lines.append(f"  {preset:<10} error: {result.error}")
            continue
        total = min(timed(lambda: score_video(path, model))[1] for _ in range(repeats))
        lines.append(
            f"  {preset:<10} embed {embed:6.2f} s ({media.num_frames / embed:6.1f} windows/s) | score_video "
            f"{total:6.2f} s = {media.duration / total:5.2f}x real time (first call {first:.2f} s)"
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper", "lips", "syncnet_v2"])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic clips")
    parser.add_argument("--synthetic", action="store_true", help="synthetic clips even when the shared ones exist")
    parser.add_argument("--repeats", type=int, default=2, help="score_video calls timed per clip and preset; the best counts")
    args = parser.parse_args()
    print(f"device: {'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}, cores: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    models = {preset: build_model(preset) for preset in args.presets}
    _, dlib_seconds = timed(lambda: find_face_tracks([np.zeros((64, 64), np.uint8)] * 5))
    print(f"dlib's models: {dlib_seconds:.2f} s to load, once per process (not in the figures below)")
    with tempfile.TemporaryDirectory() as folder:
        for label, path in clips(args.seconds, args.synthetic, Path(folder)).items():
            print(f"[{label}] " + "\n".join(bench_clip(path, models, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
