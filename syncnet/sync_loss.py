"""The frozen expert as a loss for a lip-sync generator (Wav2Lip's recipe).

    sync_loss = SyncLoss(syncnet.load_model(), value_range=(-1, 1))
    with tf.GradientTape() as tape:
        fake = generator(inputs)                    # (batch, 5, H, W, 3) mouth windows
        loss = recon + 0.03 * sync_loss(fake, mfcc)  # mfcc: (batch, 13, 20)
    grads = tape.gradient(loss, generator.trainable_variables)

The loss is the mean binary cross-entropy of the expert's P(in sync) against "in sync". The expert
is frozen: its variables are not trainable and BatchNorm runs on its moving statistics, so no
optimizer step on the generator can change it. Gradients flow to the frames only.
"""

import tensorflow as tf

from . import hyperparameters as hp
from .errors import UserError
from .loading import load_model
from .models.siamese import SyncNet, check_shape

# ITU-R 601 luma, as PIL's convert("L") makes the grayscale mouth crops the expert trained on.
_LUMA = (0.299, 0.587, 0.114)


class SyncLoss:
    """`loss = SyncLoss(model)(mouth_frames, mfcc)`: mean BCE of P(in sync) against 1.

    Args:
        model: a trained `SyncNet`, or a name/path for `load_model` (None = the default expert).
        value_range: (low, high) of the generator's pixel values, e.g. (0, 1) or (-1, 1). They are
            mapped to the [0, 255] the expert reads.

    `mouth_frames` is (batch, 5, H, W, C) with C = 3 (RGB) or 1 (gray), any H and W (resized in the
    graph to the expert's crop size), any float dtype (float16/bfloat16 are computed in float32).
    `mfcc` is (batch, 13, 20), e.g. `syncnet.audio.mfcc(audio)[..., 4 * v: 4 * v + 20]`.
    """

    def __init__(self, model: SyncNet | str | None = None, value_range=(0.0, 1.0)):
        self.model = model if isinstance(model, SyncNet) else load_model(model)
        self.model.trainable = False
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise UserError(f"value_range must be (low, high) with high > low, got {value_range}")
        self.value_range = (low, high)
        self._crop = self.model.frame_shape[1:3]
        self._channels = self.model.frame_shape[3]

    def __call__(self, mouth_frames, mfcc):
        return tf.reduce_mean(tf.math.softplus(-self.logits(mouth_frames, mfcc)))

    def probability(self, mouth_frames, mfcc):
        """P(in sync) per window, (batch,)."""
        return tf.sigmoid(self.logits(mouth_frames, mfcc))

    def logits(self, mouth_frames, mfcc):
        frames = self._prepare_frames(mouth_frames)
        mfcc = _as_float32("mfcc", mfcc)
        check_shape("mfcc", mfcc, (None, hp.MFCC_NUM_CEPSTRA, hp.WINDOW_MFCC_STEPS))
        tf.debugging.check_numerics(mfcc, "mfcc contains NaN or Inf")
        distance = self.model.l2_distance(
            [
                self.model.embed_frames(frames, training=False),
                self.model.audio_tower(mfcc, training=False),
            ]
        )
        return tf.cast(self.model.head.logits(distance), tf.float32)

    def _prepare_frames(self, mouth_frames):
        frames = _as_float32("mouth_frames", mouth_frames)
        check_shape("mouth_frames", frames, (None, hp.WINDOW_FRAMES, None, None, None), "(batch, 5, H, W, C)")
        channels = frames.shape[-1]
        if channels not in (1, 3):
            raise UserError(f"mouth_frames must have 1 (gray) or 3 (RGB) channels, got {channels}")
        tf.debugging.check_numerics(frames, "mouth_frames contains NaN or Inf")
        low, high = self.value_range
        frames = (frames - low) * (255.0 / (high - low))
        if channels == 3 and self._channels == 1:
            frames = tf.reduce_sum(frames * tf.constant(_LUMA), axis=-1, keepdims=True)
        elif channels == 1 and self._channels == 3:
            frames = tf.tile(frames, [1, 1, 1, 1, 3])
        if tuple(frames.shape[2:4]) != tuple(self._crop):
            batch = tf.shape(frames)[0]
            flat = tf.reshape(frames, tf.concat([[-1], tf.shape(frames)[2:]], axis=0))
            # Plain bilinear: the antialiased kernel (ScaleAndTranslate) has no XLA implementation.
            flat = tf.image.resize(flat, self._crop, method="bilinear")
            frames = tf.reshape(flat, [batch, hp.WINDOW_FRAMES, *self._crop, self._channels])
        return frames


def _as_float32(name, tensor):
    tensor = tf.convert_to_tensor(tensor)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise TypeError(f"{name} must be a float or integer tensor, got dtype {tensor.dtype.name}")
    return tf.cast(tensor, tf.float32)
