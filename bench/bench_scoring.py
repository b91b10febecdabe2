"""End-to-end `score_video` speed: seconds and x-real-time, against the floor of a bare decode,
split into stages in ms/frame.

    python bench/bench_scoring.py [--presets tiny paper syncnet_v2] [--seconds 10] [--synthetic]

Two clips: a 224 px talking head and a 720p one - real clips from ../shared/data when present
(unless --synthetic), else synthetic ones (tests/synthetic.py) of `--seconds`. Models have random
weights: the speed does not depend on them.

The floor: PyAV decoding every frame and nothing else (no pixel conversion), in the same process.
Stages, each timed alone, in ms per 25 fps frame: decode (score_video makes two passes: the luma for
the faces, then the luma or RGB for the crops), faces (find_face_tracks on frames in memory; inside
it - summed over both of its threads, so more than the wall time on 2 cores - the look-over's
histograms, the whole-frame detections, the detections near tracked faces, the landmarks and the
carried boxes' thumbnails), crops (crop_tracks), MFCC, towers (both over every window, batched as
score_video batches them; a `lips` model's frame encoder over every frame once). Then score_video
end to end; x-real-time = clip duration / its seconds (> 1: faster than the clip plays). For each
preset the towers' multiply-adds per second are printed next to a 2048 x 2048 float32 matmul's,
measured in the same process: this CPU's practical peak, so "compute-bound" is a number. Other
processes on the machine show in the numbers: the load average is printed first.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import av  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from clips import SHARED_CLIPS  # noqa: E402

from syncnet import faces  # noqa: E402
from syncnet.audio import mfcc  # noqa: E402
from syncnet.embedding import BATCH_WINDOWS, compiled_towers  # noqa: E402
from syncnet.faces import crop_tracks, find_face_tracks  # noqa: E402
from syncnet.models import build_model  # noqa: E402
from syncnet.scoring import score_video  # noqa: E402
from syncnet.video import load_media  # noqa: E402

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


def bare_decode_seconds(path) -> float:
    """Decoding every video frame with PyAV (threaded as the scorer decodes), no conversion."""
    start = time.perf_counter()
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        for _ in container.decode(video):
            pass
    return time.perf_counter() - start


# find_face_tracks' parts, timed by wrapping them for one call (measurement only)
TRACKING_PARTS = {"_thumbnail_histogram": "histograms", "_detect": "detections", "_landmarks": "landmarks", "_patch": "thumbnails"}


def tracking_parts(gray_frames) -> dict:
    """Seconds spent in each part of find_face_tracks (both threads), whole-frame and near
    detections apart."""
    spent = dict.fromkeys([*TRACKING_PARTS.values(), "whole-frame detections"], 0.0)
    originals = {name: getattr(faces, name) for name in TRACKING_PARTS}

    def timing(name):
        def timed_part(*args, **kwargs):
            start = time.perf_counter()
            result = originals[name](*args, **kwargs)
            spent[TRACKING_PARTS[name]] += time.perf_counter() - start
            return result

        return timed_part

    original_near = faces._detect_near

    def near(*args, **kwargs):  # its detection counts as near; the rest of _detect's time is whole-frame
        start = time.perf_counter()
        result = original_near(*args, **kwargs)
        spent["whole-frame detections"] -= time.perf_counter() - start
        return result

    try:
        for name in TRACKING_PARTS:
            setattr(faces, name, timing(name))
        faces._detect_near = near
        find_face_tracks(gray_frames)
    finally:
        for name, original in originals.items():
            setattr(faces, name, original)
        faces._detect_near = original_near
    spent["whole-frame detections"] += spent["detections"]
    spent["near detections"] = spent.pop("detections") - spent["whole-frame detections"]
    return spent


def towers_multiply_adds(model) -> float:
    """Multiply-adds of both towers for one window (TensorFlow's profiler on the traced graphs)."""
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    total = 0
    # a frame encoder runs once per frame, so once per window
    signatures = [(model.embed_features, model.feature_shape), (model.embed_audio, model.audio_shape)]
    if model.frame_encoder is not None:
        signatures.append((model.encode_frames, model.frame_shape[1:]))
    for function, shape in signatures:
        graph = tf.function(function).get_concrete_function(tf.TensorSpec((1, *shape), tf.float32)).graph
        options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
        total += profile(graph, options=options).total_float_ops / 2
    return total


def matmul_peak() -> float:
    """Multiply-adds per second of a 2048 x 2048 float32 matmul, the best of 5."""
    a = tf.random.normal((2048, 2048))
    tf.linalg.matmul(a, a).numpy()
    best = min(timed(lambda: tf.linalg.matmul(a, a).numpy())[1] for _ in range(5))
    return 2048**3 / best


def embed_seconds(model, num_windows: int) -> float:
    """Both towers over `num_windows` windows in batches of BATCH_WINDOWS, as score_video runs them
    (with a frame encoder: every frame encoded once, then windows of its features)."""
    towers = compiled_towers(model)
    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, (BATCH_WINDOWS, *model.frame_shape[1:])).astype(np.float32)
    features = rng.uniform(0, 255, (BATCH_WINDOWS, *model.feature_shape)).astype(np.float32)
    mfcc = rng.normal(0, 10, (BATCH_WINDOWS, *model.audio_shape)).astype(np.float32)
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


def bench_clip(path, models: dict, repeats: int, peak: float) -> list[str]:
    """The floor, each stage timed on its own (frames held in memory here, which score_video never
    does), then score_video end to end: the best of `repeats` calls after a first one, which also
    pays for tracing the MFCC and the head once per process."""
    media, load_seconds = timed(lambda: load_media(path))
    floor = bare_decode_seconds(path)
    gray_frames, gray_seconds = timed(lambda: list(media.frames(gray=True)))
    frames, rgb_seconds = timed(lambda: list(media.frames()))
    tracking, faces_seconds = timed(lambda: find_face_tracks(gray_frames))
    dense_seconds = timed(lambda: find_face_tracks(gray_frames, detect_every=1, rescan_every=10))[1]
    parts = tracking_parts(gray_frames)
    crop_seconds = {
        kind: timed(lambda kind=kind: list(crop_tracks(frames, tracking.tracks, kind)))[1] for kind in ("mouth", "face", "lips")
    }
    mfcc(media.audio)
    mfcc_seconds = timed(lambda: mfcc(media.audio).numpy())[1]
    per_frame = lambda seconds: f"{1000 * seconds / media.num_frames:.2f}"  # noqa: E731
    lines = [
        f"{Path(path).name}: {media.width}x{media.height}, {media.duration:.1f} s, {media.num_frames} frames, "
        f"{len(tracking.tracks)} face track(s)",
        f"  floor: bare decode {media.duration / floor:.1f}x real time ({per_frame(floor)} ms/frame)",
        f"  stages, ms/frame: open+audio {per_frame(load_seconds)}, decode {per_frame(gray_seconds)} luma / "
        f"{per_frame(rgb_seconds)} RGB, faces {per_frame(faces_seconds)} (of which, over both threads: "
        + ", ".join(f"{name} {per_frame(seconds)}" for name, seconds in parts.items())
        + f"; the dense tracking before 2026-12-01, detect_every=1 rescan_every=10: {per_frame(dense_seconds)}, "
        f"{dense_seconds / faces_seconds:.2f}x as long), crops {per_frame(crop_seconds['mouth'])} mouth / {per_frame(crop_seconds['face'])} face / "
        f"{per_frame(crop_seconds['lips'])} lips, MFCC {per_frame(mfcc_seconds)}",
    ]
    for preset, model in models.items():
        windows = media.num_frames - 5
        embed = embed_seconds(model, windows)
        result, first = timed(lambda model=model: score_video(path, model))
        if result.status != "ok":
            lines.append(f"  {preset:<10} error: {result.error}")
            continue
        total = min(timed(lambda model=model: score_video(path, model))[1] for _ in range(repeats))
        achieved = towers_multiply_adds(model) * windows / embed
        lines.append(
            f"  {preset:<10} towers {per_frame(embed)} ms/frame ({achieved / 1e9:.1f} G multiply-adds/s, "
            f"{100 * achieved / peak:.0f} % of the matmul's) | score_video {total:6.2f} s = "
            f"{media.duration / total:5.2f}x real time, {media.duration / total / (media.duration / floor):.2f} of the floor's "
            f"(first call {first:.2f} s)"
        )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "paper", "lips", "syncnet_v2"])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic clips")
    parser.add_argument("--synthetic", action="store_true", help="synthetic clips even when the shared ones exist")
    parser.add_argument("--repeats", type=int, default=4, help="score_video calls timed per clip and preset; the best counts")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # the profiler's deprecation notes
    print(
        f"device: {'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}, cores: {os.cpu_count()}, "
        f"load average: {os.getloadavg()[0]:.1f}"
    )
    models = {preset: build_model(preset) for preset in args.presets}
    _, dlib_seconds = timed(lambda: find_face_tracks([np.zeros((64, 64), np.uint8)] * 5))
    print(f"dlib's models: {dlib_seconds:.2f} s to load, once per process (not in the figures below)")
    peak = matmul_peak()
    print(f"2048 x 2048 float32 matmul: {peak / 1e9:.1f} G multiply-adds/s (this CPU's practical peak)")
    with tempfile.TemporaryDirectory() as folder:
        for label, path in clips(args.seconds, args.synthetic, Path(folder)).items():
            print(f"[{label}] " + "\n".join(bench_clip(path, models, args.repeats, peak)), flush=True)


if __name__ == "__main__":
    main()
