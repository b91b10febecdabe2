"""Train a toy "generator" for a few steps with the frozen sync loss, for any expert family.

    python examples/toy_generator.py [--model path/to/expert.keras]

The generator maps one audio window to a window of RGB frames in [-1, 1] of the shape the expert's
family expects from a generator: square mouth crops for our own expert (the crop contract in
docs/experts.md), whole 96 x 96 faces for Wav2Lip's (the loss takes their lower half). Only the sync
loss trains it here, so the expert's P(in sync) for its frames rises while the expert itself never
changes - and it rises on frames that are no mouth at all: a generator trained on the sync term alone
games it, which is why a real training loop logs `sync_loss.report(generated, real, audio)`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter off stderr

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import syncnet  # noqa: E402


def toy_generator(audio_shape, frames, height, width):
    return keras.Sequential(
        [
            keras.Input(audio_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(frames * 8 * 8 * 3),
            keras.layers.Reshape((frames * 8, 8, 3)),
            keras.layers.UpSampling2D((height // 8, width // 8)),
            keras.layers.Reshape((frames, height, width, 3)),
            keras.layers.Activation("tanh"),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="expert .keras (default: the shipped expert)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    expert = syncnet.load_model(args.model)
    family = expert.family
    sync_loss = syncnet.SyncLoss(expert, value_range=(-1, 1), channel_order="rgb")
    height, width = family.generator_face or (64, 64)
    generator = toy_generator(expert.audio_shape, family.window_frames, height, width)
    optimizer = keras.optimizers.Adam(1e-3)
    # Audio windows of two seconds of noise-like audio stand in for a dataset's speech, one for
    # each window of frames starting at frame v of 25 fps video (placed by time: v / 25 s).
    audio = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)
    windows = expert.audio_windows(audio, times=np.arange(16) / 25.0)
    expert_before = [w.numpy().copy() for w in expert.weights]

    @tf.function(jit_compile=True)
    def train_step(windows):
        with tf.GradientTape() as tape:
            loss = sync_loss(generator(windows), windows)
        grads = tape.gradient(loss, generator.trainable_variables)
        optimizer.apply(grads, generator.trainable_variables)
        return loss

    for step in range(args.steps):
        loss = float(train_step(windows))
        if step % 5 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  sync loss {loss:.4f}")
    unchanged = all(np.array_equal(a, b.numpy()) for a, b in zip(expert_before, expert.weights))
    print(f"expert weights unchanged: {unchanged}")


if __name__ == "__main__":
    main()
