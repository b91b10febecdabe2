"""Train a toy "generator" for a few steps with the frozen sync loss.

    python examples/toy_generator.py [--model path/to/expert.keras]

The generator maps a 0.2 s MFCC window to 5 RGB frames of 48 x 96 in [-1, 1] (the lower half of a
96 px face, as Wav2Lip-style generators make it; the loss resizes them to the expert's input); only
the sync loss trains it here, so the expert's P(in sync) for its frames rises while the expert
itself never changes.
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import syncnet


def toy_generator(height=48, width=96):
    return keras.Sequential(
        [
            keras.Input((13, 20)),
            keras.layers.Flatten(),
            keras.layers.Dense(5 * 6 * 12 * 3),
            keras.layers.Reshape((5 * 6, 12, 3)),
            keras.layers.UpSampling2D((height // 6, width // 12)),
            keras.layers.Reshape((5, height, width, 3)),
            keras.layers.Activation("tanh"),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="expert .keras (default: the shipped expert)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    expert = syncnet.load_model(args.model)
    sync_loss = syncnet.SyncLoss(expert, value_range=(-1, 1))
    generator = toy_generator()
    optimizer = keras.optimizers.Adam(1e-3)
    # MFCC windows of a second of noise-like audio stand in for a dataset's speech.
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    mfcc = syncnet.audio.mfcc(audio).numpy()
    windows = np.stack([mfcc[:, 4 * v : 4 * v + 20] for v in range(16)])
    expert_before = [w.numpy().copy() for w in expert.weights]

    @tf.function(jit_compile=True)
    def train_step(mfcc):
        with tf.GradientTape() as tape:
            loss = sync_loss(generator(mfcc), mfcc)
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
