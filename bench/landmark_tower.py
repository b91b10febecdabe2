"""Experiment (issue #12): does a visual tower on dlib's lip landmarks generalise to unseen speakers
better than one on pixels? Not a shipped model: landmarks are not differentiable in the pixels, so
such a tower cannot be a `SyncLoss` expert; it measures how far mouth geometry alone gets.

    python bench/landmark_tower.py VIDEO_DIR --manifest MANIFEST.tsv --cache DIR [--steps 2000]
        [--val-speakers A,B] [--mean-sub] [--dropout 0.5] [--audio-from shipped]

1. Every video under VIDEO_DIR (never a `*test_offset_*` clip) goes through `preprocess_video`: the
   face tracks as `syncnet preprocess` finds them and the MFCC. Each track's 20 lip points (dlib
   48-67) per frame are kept about the centre of its mouth crop, in units of the eye distance the
   crop is sized by (`FaceTrack.mouth_boxes`: smoothed over 0.5 s and 1 s), head roll removed;
   cached in DIR as one .npz per video.
2. Tracks are cut into the shards' 250-frame segments (`--mean-sub`: each minus its mean shape, a
   speaker's resting lips).
3. Visual tower: the 5 frames' 200 numbers -> Dense 512 -> BN -> ReLU -> Dropout -> Dense 512 -> BN
   -> ReLU -> Dense 256. Audio tower: the `paper` preset's (or the shipped expert's, frozen).
   Multi-way loss in groups of 16 windows of one segment (`syncnet train --loss multiway`'s), 4
   groups a step, Adam 1e-3, speakers balanced as `--speaker-balance 0.5`; landmarks jittered
   (scale 0.9-1.1, noise 0.01), MFCC jittered (noise 0.1, c0 gain 1).
4. Every `--eval-every` steps, on the held-out speakers' segments, the figures `syncnet evaluate`
   gives: pair ROC-AUC (in-order vs another clip's audio, from the distance) and offset accuracy
   (`evaluation.embedded_offset_accuracy`: argmin over +-15 frames within 1 of 0, single windows and
   15-window averages).
"""

import argparse
import os
import time
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from syncnet import faces  # noqa: E402
from syncnet import hyperparameters as hp  # noqa: E402
from syncnet.preprocess import find_inputs, read_speakers, segment_bounds  # noqa: E402

# the 12 held-out speakers of docs/training.md
VAL_SPEAKERS = (
    "S_donlemon,S_w2l_test,S_kpop_interview,S_ls3,LRS2_audio_only_demo_00016,S_vox_nph,S_mead_M003,S_vr1,GRID_spkA,S_katiehill,"
    "S_skarsgard,LRS2_audio_only_demo_00019"
)
GROUP, GROUPS = 16, 4
LIP_POINTS = 20 * 2


def extract(job):
    """One video's face tracks' lip points and its MFCC into cache/NAME.npz; returns a status line."""
    path, speaker, target = job
    if target.exists():
        return f"{path.name}: cached"
    from syncnet.preprocess import preprocess_video

    try:
        record = preprocess_video(path, "paper", speaker=speaker)
    except ValueError as error:
        return f"{path.name}: skipped ({error})"
    arrays = {f"points{k}": lip_points(track) for k, track in enumerate(record.tracks)}
    temporary = target.with_suffix(".tmp.npz")
    np.savez(temporary, mfcc=record.mfcc, speaker=speaker, starts=np.array([track.start for track in record.tracks]), **arrays)
    temporary.rename(target)
    return f"{path.name}: {len(record.tracks)} tracks"


def lip_points(track) -> np.ndarray:
    """A FaceTrack's (n, 40) lip points about the centre of its mouth crop, in units of the eye
    distance the crop is sized by (both smoothed as `FaceTrack.mouth_boxes` smooths them), the
    head's roll (the eye line, median over the same 1 s) removed."""
    from scipy.signal import medfilt

    boxes = track.mouth_boxes()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    eye_distance = (boxes[:, 2] - boxes[:, 0]) / faces.MOUTH_CROP_TO_EYES
    left_eye, right_eye = (track.landmarks[:, corner] for corner in faces.OUTER_EYE_CORNERS)
    roll = np.arctan2(right_eye[:, 1] - left_eye[:, 1], right_eye[:, 0] - left_eye[:, 0])
    width = min(faces.EYES_MEDIAN, len(roll) - (1 - len(roll) % 2))  # odd, at most the track's length
    roll = medfilt(roll, width) if width >= 3 else roll
    cos, sin = np.cos(-roll)[:, None], np.sin(-roll)[:, None]
    relative = (track.landmarks[:, faces.LIPS] - centre[:, None]) / eye_distance[:, None, None]
    x, y = relative[..., 0], relative[..., 1]
    return np.stack([cos * x - sin * y, sin * x + cos * y], axis=-1).reshape(len(roll), LIP_POINTS).astype(np.float32)


def load_segments(cache: Path, val_speakers: set, mean_sub: bool):
    """(train, val) lists of (speaker, lip points (n, 40), MFCC windows (n - 4, 13, 20))."""
    train, val = [], []
    for path in sorted(cache.glob("*.npz")):
        stored = np.load(path)
        speaker, mfcc = str(stored["speaker"]), stored["mfcc"]
        held_out = any(name in val_speakers for name in speaker.split("+"))
        for k, track_start in enumerate(stored["starts"]):
            track_points = stored[f"points{k}"]
            for start, stop in segment_bounds(int(track_start), int(track_start) + len(track_points)):
                windows = stop - start - hp.WINDOW_FRAMES + 1
                points = track_points[start - track_start : stop - track_start].copy()
                if mean_sub:
                    points -= points.mean(axis=0)
                steps = hp.MFCC_STEPS_PER_FRAME
                audio = np.stack([mfcc[:, steps * f : steps * f + hp.WINDOW_MFCC_STEPS] for f in range(start, start + windows)])
                (val if held_out else train).append((speaker, points, audio))
    return train, val


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video_dir")
    parser.add_argument("--manifest", required=True, help="TSV with columns file, speakers (../shared/data/MANIFEST.tsv)")
    parser.add_argument("--cache", required=True, help="folder for the extracted landmarks and MFCC")
    parser.add_argument("--val-speakers", default=VAL_SPEAKERS)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--mean-sub", action="store_true")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--audio-from", default=None, help="'shipped': the shipped expert's audio tower, frozen")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    speakers = read_speakers(args.manifest)
    jobs = [
        (path, speakers.get(path.name, path.stem), cache / f"{path.stem}.npz")
        for path, _ in find_inputs(args.video_dir)
        if "test_offset_" not in path.name and path.is_file()
    ]
    started = time.time()
    with Pool(args.workers) as pool:
        statuses = list(pool.imap_unordered(extract, jobs))
    print(f"extracted {len(jobs)} videos in {time.time() - started:.0f} s, {sum('skipped' in s for s in statuses)} skipped", flush=True)
    train_and_evaluate(*load_segments(cache, set(args.val_speakers.split(",")), args.mean_sub), args)


def train_and_evaluate(train, val, args):
    import keras
    import tensorflow as tf

    from syncnet.calibration import roc_auc
    from syncnet.evaluation import embedded_offset_accuracy
    from syncnet.loading import load_model
    from syncnet.models.towers import build_audio_tower

    print(
        f"train: {len(train)} segments, {sum(len(s[1]) for s in train)} frames; val: {len(val)}, {sum(len(s[1]) for s in val)}", flush=True
    )
    rng = np.random.default_rng(hp.SEED)
    keras.utils.set_random_seed(hp.SEED)
    frames_of = {}
    for speaker, points, _ in train:
        frames_of[speaker] = frames_of.get(speaker, 0) + len(points)
    weights = np.array([frames_of[speaker] ** -0.5 * len(points) for speaker, points, _ in train])
    weights /= weights.sum()

    visual = keras.Sequential(
        [
            keras.Input((hp.WINDOW_FRAMES, LIP_POINTS)),
            keras.layers.Flatten(),
            keras.layers.Dense(512),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(args.dropout),
            keras.layers.Dense(512),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(256),
        ]
    )
    if args.audio_from == "shipped":
        audio = load_model().audio_tower
        audio.trainable = False
    else:
        audio = build_audio_tower(0.25, 256, 1e-3)
    optimizer = keras.optimizers.Adam(1e-3)
    c0 = (np.arange(hp.MFCC_NUM_CEPSTRA) == 0)[None, :, None]

    def batch():
        visual_windows, audio_windows = [], []
        while len(visual_windows) < GROUPS:
            _, points, audio_steps = train[rng.choice(len(train), p=weights)]
            if len(audio_steps) < GROUP:
                continue
            span = min(2 * hp.VSHIFT + 1, len(audio_steps))
            starts = rng.integers(0, len(audio_steps) - span + 1) + rng.choice(span, GROUP, replace=False)
            windows = np.stack([points[i : i + hp.WINDOW_FRAMES] for i in starts])
            visual_windows.append(windows * rng.uniform(0.9, 1.1) + rng.normal(0, 0.01, windows.shape))
            chosen = audio_steps[starts]
            audio_windows.append(chosen + rng.normal(0, 0.1, chosen.shape) + rng.normal(0, 1.0) * c0)
        return np.stack(visual_windows).astype(np.float32), np.stack(audio_windows).astype(np.float32)

    @tf.function
    def step(visual_windows, audio_windows):
        with tf.GradientTape() as tape:
            v = tf.reshape(visual(tf.reshape(visual_windows, (-1, hp.WINDOW_FRAMES, LIP_POINTS)), training=True), (GROUPS, GROUP, -1))
            a = tf.reshape(audio(tf.reshape(audio_windows, (-1, *audio_windows.shape[2:])), training=True), (GROUPS, GROUP, -1))
            distance = tf.norm(v[:, :, None] - a[:, None, :] + 1e-8, axis=-1)
            labels = tf.tile(tf.eye(GROUP)[None], (GROUPS, 1, 1))
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, -distance))
        variables = visual.trainable_variables + audio.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def evaluate():
        embedded = [
            (
                visual.predict_on_batch(np.stack([points[i : i + hp.WINDOW_FRAMES] for i in range(len(steps))])),
                audio.predict_on_batch(steps),
            )
            for _, points, steps in val
        ]
        draw = np.random.default_rng(99)
        positives, negatives = [], []
        for k, (v, a) in enumerate(embedded):
            positives += list(np.linalg.norm(v - a, axis=1))
            others = [j for j in range(len(embedded)) if j != k]
            for window in v:
                other_audio = embedded[others[draw.integers(len(others))]][1]
                negatives.append(np.linalg.norm(window - other_audio[draw.integers(len(other_audio))]))
        accuracy = embedded_offset_accuracy(embedded)
        return roc_auc(-np.array(positives), -np.array(negatives)), accuracy[1], accuracy[15]

    started, losses = time.time(), []
    for number in range(1, args.steps + 1):
        losses.append(float(step(*batch())))
        if number % args.eval_every == 0:
            auc, single, fifteen = evaluate()
            print(
                f"step {number}: loss {np.mean(losses[-args.eval_every :]):.3f}; held out: pair ROC-AUC {auc:.3f}, "
                f"offset accuracy {single:.3f} (1 window) / {fifteen:.3f} (15 windows); {time.time() - started:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
