"""A Wav2Lip-style generator training step on a real clip, with the frozen expert as its sync loss.

    python examples/wav2lip_style_step.py CLIP [--model wav2lip.keras] [--steps 5] [--seconds 4]

What a generator's training pipeline does with the expert, end to end:

1. Filter the training clip: `syncnet.score_video` finds its audio-video offset. A clip off by more
   than a frame teaches the generator the wrong mouth for every sound - drop it, or `syncnet fix` it.
   (syncnet_python's demo clip, `*data_example.avi`, is 3-4 frames off: it would be dropped.)
2. Cut what the expert reads: `syncnet.expert_crops(expert, frames)` - the expert's own crop, exactly
   as scoring cuts it (square mouths for our expert; whole 96 x 96 faces for Wav2Lip's), a
   single-frame dataset of crops and their times.
3. Batch 5-frame windows from single frames (the expert judges 5 consecutive frames; LatentSync's 16),
   and place each window's audio by time: `expert.audio_windows(waveform, times)` with the seconds at
   which each window's first frame is shown (frame index / 25 here: `load_media` gives 25 fps frames;
   your dataset's own frame rate otherwise).
4. One step of a toy Wav2Lip-style generator - it sees the frame with its lower half masked, a
   reference frame of the same face, and the frame's audio window, and paints the frame - trained on
   an L1 reconstruction loss plus Wav2Lip's recipe weight: `l1 + 0.03 * sync_loss(generated, audio)`.
5. Log `sync_loss.report(generated, real, audio)`: the generated frames' sync loss beside the real
   frames' on the same windows. Generated frames beating the real ones is a warning sign, not success.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter off stderr

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import syncnet  # noqa: E402

SYNC_WEIGHT = 0.03  # Wav2Lip's syncnet_wt once the expert's loss is switched on
IN_SYNC_FRAMES = 1  # |offset| this many frames or less: keep the clip
FPS = 25.0  # load_media's frame rate


def toy_generator(height, width, channels, audio_shape):
    """(masked frame + reference frame, audio window) -> the frame, in [0, 1]."""
    faces = keras.Input((height, width, 2 * channels))
    audio = keras.Input(audio_shape)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(faces)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    a = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(audio))
    a = keras.layers.UpSampling2D((height // 4, width // 4))(keras.layers.Reshape((1, 1, 32))(a))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(keras.layers.Concatenate()([x, a]))
    x = keras.layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2DTranspose(channels, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model([faces, audio], x)


def filter_clip(path, expert):
    """syncnet.score_video as a training-data filter: True to keep the clip."""
    result = syncnet.score_video(path, expert)
    if result.status != "ok":
        print(f"filter: {path}: not scored ({result.error}): drop it")
        return False
    keep = abs(result.offset_frames) <= IN_SYNC_FRAMES
    verdict = "keep" if keep else f"drop it (or `syncnet fix {path} -o fixed.mp4`)"
    print(f"filter: offset {result.offset_frames:+d} frames, LSE-C {result.confidence:.2f}, in sync: {result.in_sync} -> {verdict}")
    return keep


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip", help="a talking-head video with audio")
    parser.add_argument("--model", default=None, help="expert .keras (default: the shipped expert)")
    parser.add_argument("--steps", type=int, default=5, help="generator steps")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of the clip to train on")
    parser.add_argument("--batch", type=int, default=4, help="windows per step")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    expert = syncnet.load_model(args.model)
    family = expert.family
    keep = filter_clip(args.clip, expert)
    if not keep:
        print("(training on it anyway, to show the step)")

    # A single-frame dataset: the expert's crops of the clip and the audio window of each frame,
    # placed by time. Only frames whose audio window lies inside the audio.
    media = syncnet.load_media(args.clip)
    audio_steps = np.asarray(expert.audio_features(media.audio)).shape[-1]
    rate, window_steps = family.front_end.rate, expert.audio_shape[-1]
    num_frames = min(media.num_frames, round(args.seconds * FPS))
    num_frames = min(num_frames, int((audio_steps - window_steps) / rate * FPS) + 1)
    frames = np.stack(list(media.frames(0, num_frames)))
    crops = syncnet.expert_crops(expert, frames).astype(np.float32) / 255.0  # (n, H, W, C) in [0, 1]
    audio = expert.audio_windows(media.audio, times=np.arange(num_frames) / FPS)  # (n, *audio_shape)
    window = family.window_frames
    starts = np.arange(num_frames - window + 1)
    print(f"data: {num_frames} frames -> {crops.shape[1:]} crops ({family.name} family), {len(starts)} windows of {window} frames")

    sync_loss = syncnet.SyncLoss(expert, value_range=(0, 1), channel_order="rgb")
    height, width, channels = crops.shape[1:]
    generator = toy_generator(height, width, channels, expert.audio_shape)
    optimizer = keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)

    def batch():
        """`--batch` windows of `window` consecutive frames from the single-frame dataset."""
        chosen = rng.choice(starts, size=min(args.batch, len(starts)), replace=False)
        frame_index = chosen[:, None] + np.arange(window)  # (batch, window)
        real = crops[frame_index]  # (batch, window, H, W, C)
        masked = real.copy()
        masked[:, :, height // 2 :] = 0.0  # Wav2Lip's mask: the generator must paint the lower half
        reference = crops[rng.integers(0, num_frames, frame_index.shape)]  # the same face at another moment
        faces = np.concatenate([masked, reference], axis=-1).reshape(-1, height, width, 2 * channels)
        frame_audio = audio[frame_index.ravel()]  # each frame's own audio window, for the generator
        return faces, frame_audio, real, audio[chosen]  # the last: each window's audio, for the expert

    @tf.function
    def train_step(faces, frame_audio, real, window_audio):
        with tf.GradientTape() as tape:
            generated = tf.reshape(generator([faces, frame_audio], training=True), tf.shape(real))
            l1 = tf.reduce_mean(tf.abs(generated - real))
            sync = sync_loss(generated, window_audio)
            loss = l1 + SYNC_WEIGHT * sync
        grads = tape.gradient(loss, generator.trainable_variables)
        optimizer.apply(grads, generator.trainable_variables)
        return generated, l1, sync

    logged = []
    for step in range(args.steps):
        faces, frame_audio, real, window_audio = batch()
        generated, l1, sync = train_step(faces, frame_audio, real, window_audio)
        report = {name: float(value) for name, value in sync_loss.report(generated, real, window_audio).items()}
        logged.append(report)
        print(
            f"step {step}: l1 {float(l1):.4f}  sync loss {report['sync_loss']:.4f} (real frames {report['sync_loss_real']:.4f})  "
            f"P(in sync) {report['p_in_sync']:.3f} (real {report['p_in_sync_real']:.3f})"
        )
    generated_loss, real_loss = (np.mean([report[name] for report in logged]) for name in ("sync_loss", "sync_loss_real"))
    print(f"mean over {len(logged)} steps: sync loss {generated_loss:.4f}, real frames {real_loss:.4f}")
    if generated_loss < real_loss:
        print("warning: the generated frames beat the real ones - look at them before trusting the sync loss")


if __name__ == "__main__":
    main()
