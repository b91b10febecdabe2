"""The frozen expert as a loss for a lip-sync generator (Wav2Lip's recipe), for every expert family.

    sync_loss = SyncLoss(syncnet.load_model("wav2lip.keras"))   # Wav2Lip's conventions by default
    with tf.GradientTape() as tape:
        fake = generator(inputs)                    # (batch, 5, 96, 96, 3) BGR faces in [0, 1]
        loss = recon + 0.03 * sync_loss(fake, mel)  # mel: (batch, 80, 16), model.audio_windows(...)
    grads = tape.gradient(loss, generator.trainable_variables)

The loss is the mean binary cross-entropy of the expert's P(in sync) against "in sync". The expert is
frozen: its variables are not trainable and BatchNorm runs on its moving statistics (or, with
`batchnorm="batch"`, on the batch's own statistics as Wav2Lip's training runs its expert, still
without updating anything), so no optimizer step on the generator can change it. Gradients flow to
the frames only.

Inputs are checked in the graph, so the checks hold in `tf.function` and under XLA: non-finite
frames or audio, frames outside `value_range` (by more than a margin), batch sizes that differ.
Eagerly they raise UserError; in a `tf.function` an InvalidArgumentError; under XLA, which drops
assertions, the loss (and every probability) becomes NaN - visible in any loss log, and Keras'
`TerminateOnNaN` stops on it.
"""

import inspect

import tensorflow as tf

from .errors import UserError
from .loading import resolve_model
from .models.siamese import check_shape

# ITU-R 601 luma, as PIL's convert("L") makes the grayscale mouth crops the paper family trained on.
_LUMA = (0.299, 0.587, 0.114)
# Frames may overshoot value_range by this fraction of it (a tanh never does; resampling, a little)
# before they count as another scale: uint8 frames declared (0, 1) overshoot by 25,400 %.
RANGE_MARGIN = 0.05
# The aspect ratio of the frames (after the lower half is taken, for families that read one) may
# differ from the expert's crop by this factor before they cannot be what the expert reads.
MAX_ASPECT_CHANGE = 1.3


class SyncLoss:
    """`loss = SyncLoss(model)(frames, audio)`: mean BCE of P(in sync) against 1.

    Args:
        model: an expert (`load_model`'s), or a name/path for `load_model` (None = the default expert).
        value_range: (low, high) of the generator's pixel values, e.g. (0, 1) or (-1, 1); default:
            the family's (`model.family.value_range`: Wav2Lip's (0, 1), our own expert's (0, 1)).
        channel_order: "rgb" or "bgr" for 3-channel frames; default the family's (Wav2Lip: "bgr",
            as its generator emits OpenCV's order).
        batchnorm: "frozen" (moving statistics; the default) or "batch" (the batch's statistics, as
            Wav2Lip's generator training runs its expert; families with PyTorch BatchNorm only).

    `frames` is (batch, T, H, W, C): T = the family's window (5; 16 for LatentSync), C = 3 or 1 (gray),
    any float or integer dtype (computed in float32). For a family that reads the lower half of a face
    (`model.family.generator_face`: Wav2Lip, LatentSync) give whole faces; the loss takes the lower
    half, as Wav2Lip's `get_sync_loss` does. Then H x W is resized to the expert's crop - but an
    aspect ratio far from the crop's is refused: such frames cannot be what the expert reads (the
    crop contracts: docs/experts.md). `audio` is (batch, *model.audio_shape): the family's windows,
    `model.audio_windows(waveform, times)`.
    """

    def __init__(self, model=None, value_range=None, channel_order: str | None = None, batchnorm: str = "frozen"):
        self.model, _ = resolve_model(model)
        self.model.trainable = False
        self.family = self.model.family
        low, high = (float(v) for v in (value_range if value_range is not None else self.family.value_range))
        if not high > low:
            raise UserError(f"value_range must be (low, high) with high > low, got {value_range}")
        self.value_range = (low, high)
        default_order = self.family.channel_order if self.family.channel_order in ("rgb", "bgr") else "rgb"
        self.channel_order = channel_order or default_order
        if self.channel_order not in ("rgb", "bgr"):
            raise UserError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        if batchnorm not in ("frozen", "batch"):
            raise UserError(f"batchnorm must be 'frozen' or 'batch', got {batchnorm!r}")
        if batchnorm == "batch" and "batch_statistics" not in inspect.signature(self.model.embed_frames).parameters:
            raise UserError(f"batchnorm='batch' reproduces PyTorch experts' training mode; the {self.family.name} family has no such mode")
        self._batch_statistics = {"batch_statistics": True} if batchnorm == "batch" else {}

    def __call__(self, frames, audio):
        logits, valid = self._checked_logits(frames, audio)
        return _unless_invalid(valid, tf.reduce_mean(tf.math.softplus(-logits)))

    def probability(self, frames, audio):
        """P(in sync) per window, (batch,)."""
        logits, valid = self._checked_logits(frames, audio)
        return _unless_invalid(valid, tf.sigmoid(logits))

    def logits(self, frames, audio):
        """log-odds of P(in sync) per window, (batch,), float32."""
        return _unless_invalid(*self._checked_logits(frames, audio)[::-1])

    def _checked_logits(self, frames, audio):
        """(the logits, a scalar bool: the inputs passed the checks)."""
        raw_frames, frames = self._prepare_frames(frames)
        audio = _as_float32("audio", audio)
        check_shape("audio", audio, (None, *self.model.audio_shape))
        valid = self._check(raw_frames, audio)
        visual = self.model.embed_frames(frames, training=False, **self._batch_statistics)
        heard = self.model.embed_audio(audio, training=False, **self._batch_statistics)
        return tf.cast(self.model.sync_logits(visual, heard), tf.float32), valid

    def report(self, generated, real, audio) -> dict:
        """The loss and mean P(in sync) of generated frames beside the real frames of the same windows:
        log both. Generated frames beating the real ones is a warning sign - the generator has found
        something the expert likes that is not a speaking mouth (a frozen, blank or textured mouth)."""
        p_generated, p_real = self.probability(generated, audio), self.probability(real, audio)
        return {
            "sync_loss": tf.reduce_mean(-tf.math.log(tf.maximum(p_generated, 1e-7))),
            "sync_loss_real": tf.reduce_mean(-tf.math.log(tf.maximum(p_real, 1e-7))),
            "p_in_sync": tf.reduce_mean(p_generated),
            "p_in_sync_real": tf.reduce_mean(p_real),
        }

    def _check(self, frames, audio):
        """A scalar bool: the inputs are usable. Raises eagerly; asserts in a graph (XLA drops the
        assertion, the caller's NaN remains)."""
        low, high = self.value_range
        margin = RANGE_MARGIN * (high - low)
        frames_min, frames_max = tf.reduce_min(frames), tf.reduce_max(frames)
        conditions = [
            (tf.reduce_all(tf.math.is_finite(frames)), "frames contain NaN or Inf"),
            (tf.reduce_all(tf.math.is_finite(audio)), "audio contains NaN or Inf"),
            (
                (frames_min >= low - margin) & (frames_max <= high + margin),
                f"frames are outside value_range {self.value_range} (declare the range your generator emits, e.g. value_range=(0, 255) for uint8)",
            ),
            (tf.shape(frames)[0] == tf.shape(audio)[0], "frames and audio have different batch sizes"),
        ]
        if frames.shape[0] is not None and audio.shape[0] is not None and frames.shape[0] != audio.shape[0]:
            raise UserError(f"frames and audio have different batch sizes: {frames.shape[0]} and {audio.shape[0]}")
        if tf.executing_eagerly():
            for condition, message in conditions:
                if not bool(condition):
                    if "value_range" in message:
                        message += f"; got values in [{float(frames_min):.4g}, {float(frames_max):.4g}]"
                    raise UserError(message)
            return tf.constant(True)
        valid = tf.constant(True)
        for condition, message in conditions:
            with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
                valid = tf.logical_and(valid, tf.identity(condition))
        return valid

    def _prepare_frames(self, frames):
        """(the frames as float32, the frames as the expert's `embed_frames` takes them)."""
        raw = _as_float32("frames", frames)
        family = self.family
        check_shape("frames", raw, (None, family.window_frames, None, None, None), f"(batch, {family.window_frames}, H, W, C)")
        channels = raw.shape[-1]
        if channels not in (1, 3):
            raise UserError(f"frames must have 1 (gray) or 3 (colour) channels, got {channels}")
        low, high = self.value_range
        frames = (raw - low) * (255.0 / (high - low))
        if channels == 3 and self.channel_order == "bgr":
            frames = frames[..., ::-1]
        if family.generator_face is not None:  # whole faces in; the expert reads the lower half
            frames = frames[:, :, frames.shape[2] // 2 :]
        expert_channels = self.model.frame_shape[-1]
        if channels == 3 and expert_channels == 1:
            frames = tf.reduce_sum(frames * tf.constant(_LUMA), axis=-1, keepdims=True)
        elif channels == 1 and expert_channels == 3:
            frames = tf.tile(frames, [1, 1, 1, 1, 3])
        crop = tuple(self.model.frame_shape[1:3])
        height, width = frames.shape[2], frames.shape[3]
        if height is None or width is None:
            raise UserError("frames need a static height and width")
        change = (width / height) / (crop[1] / crop[0])
        if max(change, 1 / change) > MAX_ASPECT_CHANGE:
            given = "lower halves of " if family.generator_face else ""
            raise UserError(
                f"{given}{height} x {width} frames cannot be what the {family.name} expert reads ({crop[0]} x {crop[1]}, "
                f"aspect {crop[1] / crop[0]:.2g}): give it {_CROP_CONTRACTS[family.crop]} (docs/experts.md)"
            )
        if (height, width) != crop:
            batch = tf.shape(frames)[0]
            flat = tf.reshape(frames, tf.concat([[-1], tf.shape(frames)[2:]], axis=0))
            # Plain bilinear: the antialiased kernel (ScaleAndTranslate) has no XLA implementation.
            flat = tf.image.resize(flat, crop, method="bilinear")
            frames = tf.reshape(flat, [batch, family.window_frames, *crop, expert_channels])
        return raw, frames


# What each crop kind (syncnet.faces.crop_tracks) is, in the words a generator's author needs.
_CROP_CONTRACTS = {
    "mouth": "square mouth crops: centred on the lips, 1.2 x the outer-eye-corner distance wide (the mouth and a little chin)",
    "face": "syncnet_python's face crops: square, 2.8 x the face box's half-side wide, the face in the upper part",
    "lips": "the box of the 20 lip landmarks, fitted into 50 x 100",
    "lower_face": "whole square faces as Wav2Lip crops them (its face detector's box, resized to 96 x 96)",
    "latentsync_face": "whole 256 x 256 faces aligned as LatentSync aligns them (brows and nose onto its template)",
}


def _unless_invalid(valid, value):
    """`value`, or NaN where the inputs failed a check - applied last: XLA's softplus and sigmoid
    turn a NaN into a plausible number."""
    return tf.where(valid, value, tf.constant(float("nan")))


def _as_float32(name, tensor):
    tensor = tf.convert_to_tensor(tensor)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer):
        raise UserError(f"{name} must be a float or integer tensor, got dtype {tensor.dtype.name}")
    return tf.cast(tensor, tf.float32)
