"""Samples/s of both presets and of the sync loss on this machine (CPU unless TF sees a GPU).

    python bench/bench_models.py [--batch 32] [--seconds 10]

Figures are reported raw and as ratios against the syncnet_v2 forward pass measured in the same
process (the baseline), so runs on busy or different machines stay comparable. With PyTorch
installed, syncnet_python's own network runs too: the reference our syncnet_v2 preset converts.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from syncnet.models import build_model  # noqa: E402
from syncnet.sync_loss import SyncLoss  # noqa: E402


def samples_per_second(step, batch, seconds):
    step()  # trace / warm up
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - start)


def inputs(model, batch):
    rng = np.random.default_rng(0)
    frames = tf.constant(rng.uniform(0, 255, (batch, *model.frame_shape)).astype(np.float32))
    mfcc = tf.constant(rng.normal(0, 10, (batch, 13, 20)).astype(np.float32))
    labels = tf.constant((rng.random(batch) > 0.5).astype(np.float32))
    return frames, mfcc, labels


def model_steps(model, batch):
    frames, mfcc, labels = inputs(model, batch)
    optimizer = keras.optimizers.Adam(1e-4)
    bce = keras.losses.BinaryCrossentropy()

    @tf.function
    def forward():
        return model({"frames": frames, "audio": mfcc}, training=False)["distance"]

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = bce(labels, model({"frames": frames, "audio": mfcc}, training=True)["probability"])
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    return forward, train_step


def sync_loss_step(model, batch):
    loss_fn = SyncLoss(model, value_range=(-1, 1))
    frames = tf.Variable(tf.random.uniform((batch, 5, 96, 96, 3), -1, 1, seed=0))
    mfcc = inputs(model, batch)[1]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(frames, mfcc)
        return tape.gradient(loss, frames)

    return step


def syncnet_python_forward(batch):
    """syncnet_python's own network (tests/test_convert.py copies its SyncNetModel.py) in PyTorch,
    both towers as its evaluate() runs them; None without PyTorch (the convert extra)."""
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_convert import syncnet_python_model, torch_audio_embeddings, torch_lip_embeddings

    model = syncnet_python_model(torch).eval()
    frames = torch.rand(batch, 3, 5, 224, 224) * 255
    mfcc = torch.randn(batch, 1, 13, 20) * 10

    def forward():
        with torch.no_grad():
            return torch_lip_embeddings(model, frames), torch_audio_embeddings(model, mfcc)

    return forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"device: {'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}, threads: {os.cpu_count()}, batch {args.batch}")
    results = {}
    for preset in ("syncnet_v2", "paper"):
        model = build_model(preset)
        forward, train_step = model_steps(model, args.batch)
        results[f"{preset} forward"] = samples_per_second(forward, args.batch, args.seconds)
        results[f"{preset} forward+backward"] = samples_per_second(train_step, args.batch, args.seconds)
        results[f"{preset} sync loss (96px RGB in [-1,1]) + grad"] = samples_per_second(
            sync_loss_step(model, args.batch), args.batch, args.seconds
        )
    syncnet_python = syncnet_python_forward(args.batch)
    if syncnet_python:
        results["syncnet_python's network in PyTorch, forward"] = samples_per_second(syncnet_python, args.batch, args.seconds)
    baseline = results["syncnet_v2 forward"]
    for name, rate in results.items():
        print(f"{name:48s} {rate:8.1f} samples/s   {rate / baseline:5.2f}x syncnet_v2 forward")


if __name__ == "__main__":
    main()
