"""A tiny SyncNet expert trained on synthetic talking-head clips, for tests that need a model that knows sync.

The clips (tests/synthetic.py) open the mouth with a speech-like envelope and make the audio as loud
as the mouth is open, so "in sync" is learnable in seconds. Training is the card's recipe in small:
mouth crops from faces.py, MFCC from audio.py, BCE on the head's P(in sync) over half in-order pairs
and half negatives (the same clip's audio shifted by 1-12 frames, or another clip's audio). The model
is saved in the cache folder and reused.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from synthetic import write_clip

from syncnet import hyperparameters as hp
from syncnet.audio import mfcc
from syncnet.faces import crop_tracks, find_face_tracks
from syncnet.loading import load_model
from syncnet.models import SyncNet, build_model
from syncnet.video import load_media

TRAIN_SEEDS = (101, 102, 103, 104, 105)  # tests score clips of other seeds: held-out speech
CLIP_SECONDS = 4.0
MAX_NEGATIVE_SHIFT = 12
EPOCHS = 10
BATCH = 32
LEARNING_RATE = 3e-3  # decayed to 0 (cosine): BatchNorm's moving statistics catch up with the weights
MODEL_FILE = "tiny_synthetic_v1.keras"  # bump the version when the recipe changes


def trained_tiny_model(cache_dir) -> SyncNet:
    """The tiny expert, trained once into `cache_dir` and loaded from there after that."""
    path = Path(cache_dir) / MODEL_FILE
    if path.is_file():
        return load_model(path)
    clips = [clip_windows(Path(cache_dir) / f"train_{seed}.mp4", seed) for seed in TRAIN_SEEDS]
    frames, audio, labels = training_pairs(clips, np.random.default_rng(0))

    keras.utils.set_random_seed(hp.SEED)
    model = build_model("tiny")
    steps = EPOCHS * -(-len(labels) // BATCH)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss={"probability": keras.losses.BinaryCrossentropy()})
    dataset = (
        tf.data.Dataset.from_tensor_slices(({"frames": frames, "audio": audio}, {"probability": labels}))
        .shuffle(len(labels), seed=hp.SEED)
        .batch(BATCH)
        .map(lambda x, y: ({"frames": tf.cast(x["frames"], tf.float32), "audio": x["audio"]}, y))
    )
    model.fit(dataset, epochs=EPOCHS, verbose=0, shuffle=False)  # shuffled above, as Keras wants a tf.data.Dataset
    model.save(path)
    return model


def clip_windows(path, seed):
    """Write a synthetic clip; return its mouth crops (T, 112, 112) and MFCC (13, 4T + ...)."""
    write_clip(path, seconds=CLIP_SECONDS, seed=seed)
    media = load_media(path)
    tracks = find_face_tracks(media.frames()).tracks
    assert len(tracks) == 1, f"{path}: expected one face track, found {len(tracks)}"
    mouths = np.stack([crops[tracks[0].track_id] for _, crops in crop_tracks(media.frames(), tracks, "mouth")])
    return mouths, mfcc(media.audio).numpy()


def training_pairs(clips, rng):
    """Every in-order window of every clip (label 1), and as many negatives (label 0): half the same
    clip's audio 1..MAX_NEGATIVE_SHIFT frames off, half another clip's audio."""
    frames, audio, labels = [], [], []

    def add(mouths, frame, cepstra, audio_frame, label):
        frames.append(mouths[frame : frame + hp.WINDOW_FRAMES, :, :, None])
        step = audio_frame * hp.MFCC_STEPS_PER_FRAME
        audio.append(cepstra[:, step : step + hp.WINDOW_MFCC_STEPS])
        labels.append(label)

    num_windows = [min(len(m), c.shape[1] // hp.MFCC_STEPS_PER_FRAME) - hp.WINDOW_FRAMES for m, c in clips]
    for index, (mouths, cepstra) in enumerate(clips):
        for frame in range(num_windows[index]):
            add(mouths, frame, cepstra, frame, 1.0)
            if rng.random() < 0.5:
                shift = int(rng.integers(1, MAX_NEGATIVE_SHIFT + 1)) * rng.choice([-1, 1])
                shifted = int(np.clip(frame + shift, 0, num_windows[index] - 1))
                if shifted == frame:
                    shifted = frame - shift
                add(mouths, frame, cepstra, shifted, 0.0)
            else:
                other = (index + int(rng.integers(1, len(clips)))) % len(clips)
                add(mouths, frame, clips[other][1], int(rng.integers(num_windows[other])), 0.0)
    return np.stack(frames), np.stack(audio).astype(np.float32), np.asarray(labels, np.float32)
