"""Wav2Lip's expert discriminator (`SyncNet_color` of Wav2Lip's models/syncnet.py, the network of its
published `lipsync_expert.pth`), layer for layer, and the converter from that checkpoint.

The network: a face encoder of 17 blocks over the lower halves of 5 faces (48 x 96, the 5 BGR frames
stacked into 15 channels, pixels in [0, 1]) and an audio encoder of 14 blocks over an 80 x 16 mel
window (syncnet.audio.mel), each block conv (with bias) -> BatchNorm (eps 1e-5) -> (+ input, for the
residual ones) -> ReLU, PyTorch's symmetric zero padding made explicit. Both end in 512 x 1 x 1,
flattened and L2-normalised; P(in sync) is their cosine similarity (non-negative: both came out of
a ReLU), trained with BCE against in-sync / off-sync labels.

Our frames are RGB pixels in [0, 255], as every family's `embed_frames` takes them: the model divides
by 255, and the converter reverses the first conv's input channels within each frame (BGR -> RGB), so
the converted model given RGB frames computes what Wav2Lip's computes on the same frames in BGR.

`batch_statistics=True` (SyncLoss' `batchnorm="batch"`) normalises with the batch's own mean and
(biased) variance, as PyTorch's BatchNorm in train mode does - how Wav2Lip's generator training runs
its expert, which it never switches to eval mode - without touching the moving statistics.
"""

import keras
import numpy as np
from keras import ops

from ..calibration import Calibration
from ..errors import UserError
from .family import WAV2LIP, FamilyMethods
from .siamese import check_shape

# (filters, kernel, strides, padding, residual), Wav2Lip's models/syncnet.py SyncNet_color.
FACE_PLAN = (
    (32, 7, 1, 3, False),  # 48 x 96
    (64, 5, (1, 2), 1, False),  # 46 x 47
    (64, 3, 1, 1, True),
    (64, 3, 1, 1, True),
    (128, 3, 2, 1, False),  # 23 x 24
    (128, 3, 1, 1, True),
    (128, 3, 1, 1, True),
    (128, 3, 1, 1, True),
    (256, 3, 2, 1, False),  # 12 x 12
    (256, 3, 1, 1, True),
    (256, 3, 1, 1, True),
    (512, 3, 2, 1, False),  # 6 x 6
    (512, 3, 1, 1, True),
    (512, 3, 1, 1, True),
    (512, 3, 2, 1, False),  # 3 x 3
    (512, 3, 1, 0, False),  # 1 x 1
    (512, 1, 1, 0, False),
)
AUDIO_PLAN = (
    (32, 3, 1, 1, False),  # 80 x 16
    (32, 3, 1, 1, True),
    (32, 3, 1, 1, True),
    (64, 3, (3, 1), 1, False),  # 27 x 16
    (64, 3, 1, 1, True),
    (64, 3, 1, 1, True),
    (128, 3, 3, 1, False),  # 9 x 6
    (128, 3, 1, 1, True),
    (128, 3, 1, 1, True),
    (256, 3, (3, 2), 1, False),  # 3 x 3
    (256, 3, 1, 1, True),
    (256, 3, 1, 1, True),
    (512, 3, 1, 0, False),  # 1 x 1
    (512, 1, 1, 0, False),
)
BN_EPSILON = 1e-5  # PyTorch's default
NORMALIZE_EPSILON = 1e-12  # F.normalize's floor on the norm
# P(in sync) is the cosine similarity itself; its log-odds are taken with it clipped this far from 0
# and 1 (PyTorch's BCELoss clamps the log at -100 instead: the loss differs only past p < 1e-7).
PROBABILITY_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="syncnet")
class ConvBlock(keras.layers.Layer):
    """Wav2Lip's `Conv2d` block: zero padding -> conv -> BatchNorm -> (+ input) -> ReLU."""

    def __init__(self, filters, kernel, strides=1, padding=0, residual=False, epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel, self.strides, self.padding, self.residual = filters, kernel, strides, padding, residual
        self.epsilon = epsilon
        self.pad = keras.layers.ZeroPadding2D(padding, dtype=self.dtype_policy) if padding else None
        self.conv = keras.layers.Conv2D(filters, kernel, strides=strides, name="conv", dtype=self.dtype_policy)
        self.bn = keras.layers.BatchNormalization(epsilon=epsilon, momentum=0.9, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.pad is not None:
            self.pad.build(shape)
            shape = self.pad.compute_output_shape(shape)
        self.conv.build(shape)
        self.bn.build(self.conv.compute_output_shape(shape))

    def call(self, x, training=None, batch_statistics=False):
        out = self.conv(self.pad(x) if self.pad is not None else x)
        if batch_statistics:  # PyTorch's train mode, moving statistics untouched
            mean, variance = ops.moments(out, axes=[0, 1, 2])
            out = (out - mean) * ops.rsqrt(variance + self.epsilon) * ops.cast(self.bn.gamma, out.dtype) + ops.cast(self.bn.beta, out.dtype)
        else:
            out = self.bn(out, training=training)
        if self.residual:
            out = out + x
        return ops.relu(out)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.pad is not None:
            shape = self.pad.compute_output_shape(shape)
        return self.conv.compute_output_shape(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel": self.kernel,
            "strides": self.strides,
            "padding": self.padding,
            "residual": self.residual,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="syncnet")
class ConvEncoder(keras.layers.Layer):
    """A stack of ConvBlocks from a plan, flattened: (batch, H, W, C) -> (batch, filters of the last)."""

    def __init__(self, plan, width: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.plan = [list(step) for step in plan]
        self.width = width
        self.blocks = [
            ConvBlock(max(1, round(filters * width)), kernel, strides, padding, residual, name=f"block{index}", dtype=self.dtype_policy)
            for index, (filters, kernel, strides, padding, residual) in enumerate(self.plan)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def call(self, x, training=None, batch_statistics=False):
        for block in self.blocks:
            x = block(x, training=training, batch_statistics=batch_statistics)
        return ops.reshape(x, (ops.shape(x)[0], -1))

    def get_config(self):
        return {**super().get_config(), "plan": self.plan, "width": self.width}


def l2_normalize(x):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), NORMALIZE_EPSILON)


@keras.saving.register_keras_serializable(package="syncnet")
class Wav2LipSyncNet(FamilyMethods, keras.Model):
    """Wav2Lip's expert. `{"frames": (batch, 5, 48, 96, 3) RGB lower faces in [0, 255], "audio":
    (batch, 80, 16) mel}` -> `{"distance": 1 - cosine, "probability": cosine}`. `width` < 1 makes a
    narrower network of the same shape (tests, quick runs); the published one is width 1."""

    family = WAV2LIP

    def __init__(self, width: float = 1.0, calibration=None, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.face_encoder = ConvEncoder(FACE_PLAN, width, name="face_encoder", dtype=self.dtype_policy)
        self.audio_encoder = ConvEncoder(AUDIO_PLAN, width, name="audio_encoder", dtype=self.dtype_policy)
        self.face_encoder.build((None, *self.family.frame_size, 3 * self.family.window_frames))
        self.audio_encoder.build((None, *self.family.audio_shape, 1))
        self.calibration = calibration
        self.built = True

    preset = "wav2lip"  # the shards it reads (`syncnet preprocess --preset`): any width reads the same
    frame_shape = property(lambda self: self.family.frame_shape)
    audio_shape = property(lambda self: self.family.audio_shape)
    embedding_dim = property(lambda self: max(1, round(FACE_PLAN[-1][0] * self.width)))

    def embed_frames(self, frames, training=False, batch_statistics=False):
        """(batch, 5, 48, 96, 3) RGB pixels in [0, 255] -> (batch, 512) unit vectors."""
        check_shape("frames", frames, (None, *self.frame_shape))
        frames = ops.cast(frames, self.compute_dtype) / 255.0
        # (b, t, h, w, c) -> (b, h, w, t, c) -> channels 3 t + c, as Wav2Lip concatenates its frames
        height, width = self.family.frame_size
        stacked = ops.reshape(ops.transpose(frames, (0, 2, 3, 1, 4)), (-1, height, width, 3 * self.family.window_frames))
        return l2_normalize(self.face_encoder(stacked, training=training, batch_statistics=batch_statistics))

    def embed_audio(self, audio, training=False, batch_statistics=False):
        """(batch, 80, 16) mel windows -> (batch, 512) unit vectors."""
        check_shape("audio", audio, (None, *self.audio_shape))
        audio = ops.expand_dims(ops.cast(audio, self.compute_dtype), -1)
        return l2_normalize(self.audio_encoder(audio, training=training, batch_statistics=batch_statistics))

    def similarity(self, visual, audio):
        """Cosine similarity of unit embeddings, float32: Wav2Lip's P(in sync)."""
        return ops.sum(ops.cast(visual, "float32") * ops.cast(audio, "float32"), axis=-1)

    def distance_probability(self, distance):
        """P(in sync) of a distance (1 - cosine): the cosine similarity."""
        return 1.0 - distance

    def sync_logits(self, visual, audio):
        """log-odds of P(in sync) = the cosine similarity, float32."""
        p = ops.clip(self.similarity(visual, audio), PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
        return ops.log(p) - ops.log1p(-p)

    def call(self, inputs, training=None):
        """Pairs - frames (batch, 5, 48, 96, 3) with audio (batch, 80, 16) - give (batch,); groups -
        frames (batch, k, ...) with audio (batch, k, 80, 16) - every window of a group against every
        audio window of it, (batch, k, k), each embedded once (the multi-way loss)."""
        frames, audio = inputs["frames"], inputs["audio"]
        if len(audio.shape) == 4:
            group = audio.shape[1]
            visual = ops.reshape(
                self.embed_frames(ops.reshape(frames, (-1, *self.frame_shape)), training), (-1, group, 1, self.embedding_dim)
            )
            heard = ops.reshape(self.embed_audio(ops.reshape(audio, (-1, *self.audio_shape)), training), (-1, 1, group, self.embedding_dim))
        else:
            visual, heard = self.embed_frames(frames, training), self.embed_audio(audio, training)
        similarity = self.similarity(visual, heard)
        return {"distance": 1.0 - similarity, "probability": similarity}

    def get_config(self):
        calibration = None if self.calibration is None else self.calibration.to_dict()
        return {**super().get_config(), "width": self.width, "calibration": calibration}

    @classmethod
    def from_config(cls, config):
        calibration = config.pop("calibration", None)
        return cls(**config, calibration=None if calibration is None else Calibration.from_dict(calibration))


# --- The published checkpoint ------------------------------------------------------------------

ENCODERS = ("face_encoder", "audio_encoder")
# Keys of Wav2Lip's other two checkpoints, to name them when they are given instead of the expert.
GENERATOR_KEYS = ("face_encoder_blocks", "face_decoder_blocks", "output_block")
QUALITY_DISCRIMINATOR_KEYS = ("face_encoder_blocks", "binary_pred")


def is_checkpoint(keys) -> bool:
    """Whether a state dict's keys look like Wav2Lip's expert (its two encoders, nothing of the generator's)."""
    keys = list(keys)
    return any(key.startswith("face_encoder.") for key in keys) and any(key.startswith("audio_encoder.") for key in keys)


def other_wav2lip_checkpoint(keys) -> str | None:
    """ "Wav2Lip's generator (wav2lip.pth)" or "... visual quality discriminator" when the keys are
    one of those, else None."""
    roots = {key.split(".")[0] for key in keys}
    if set(GENERATOR_KEYS) <= roots:
        return "Wav2Lip's generator (wav2lip.pth / wav2lip_gan.pth), not its expert discriminator"
    if set(QUALITY_DISCRIMINATOR_KEYS) <= roots:
        return "Wav2Lip's visual quality discriminator (visual_quality_disc.pth), not its expert discriminator"
    return None


def convert_state_dict(state: dict, width: float = 1.0) -> Wav2LipSyncNet:
    """A Wav2LipSyncNet with the weights of a `lipsync_expert.pth` state dict (float32 numpy arrays,
    `module.` prefixes already stripped). Raises UserError naming the first few missing, unexpected
    or mis-shaped keys."""
    model = Wav2LipSyncNet(width=width, name="wav2lip_expert")
    weights, problems, used = [], [], set()
    for encoder_name in ENCODERS:
        encoder = getattr(model, encoder_name)
        for index, block in enumerate(encoder.blocks):
            prefix = f"{encoder_name}.{index}.conv_block"
            kernel_shape = tuple(block.conv.kernel.shape)  # (kh, kw, in, out)
            expected = {
                f"{prefix}.0.weight": (kernel_shape[3], kernel_shape[2], kernel_shape[0], kernel_shape[1]),
                f"{prefix}.0.bias": (kernel_shape[3],),
                **{f"{prefix}.1.{name}": (kernel_shape[3],) for name in ("weight", "bias", "running_mean", "running_var")},
            }
            for key, shape in expected.items():
                if key not in state:
                    problems.append(f"missing {key}")
                elif tuple(state[key].shape) != shape:
                    problems.append(f"{key} has shape {tuple(state[key].shape)}, expected {shape}")
                used.add(key)
            used.add(f"{prefix}.1.num_batches_tracked")  # a step counter, no weights; optional
            if problems:
                continue
            kernel = np.transpose(state[f"{prefix}.0.weight"], (2, 3, 1, 0))
            if encoder_name == "face_encoder" and index == 0:  # BGR -> RGB within each frame's 3 channels
                frames = kernel.shape[2] // 3
                kernel = kernel.reshape(*kernel.shape[:2], frames, 3, -1)[:, :, :, ::-1].reshape(kernel.shape)
            bn = [state[f"{prefix}.1.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]
            weights.append((block, kernel, state[f"{prefix}.0.bias"], bn))
    problems += [f"unexpected {key}" for key in state if key not in used]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError("does not match Wav2Lip's expert (SyncNet_color): " + "; ".join(problems[:3]) + more)
    for block, kernel, bias, bn in weights:
        block.conv.set_weights([kernel, bias])
        block.bn.set_weights(bn)
    return model


# Presets to train (`syncnet train --preset`): the published width, and narrower copies of the same
# network for a CPU (a quarter: 1/16 of the multiply-adds) and for tests.
PRESETS = {"wav2lip": 1.0, "wav2lip_small": 0.25, "wav2lip_tiny": 0.0625}


def build(preset: str = "wav2lip") -> Wav2LipSyncNet:
    """A new, untrained Wav2Lip expert of a preset (PRESETS)."""
    return Wav2LipSyncNet(width=PRESETS[preset], name=preset)
