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

from ..errors import UserError
from .cosine import CosineExpert
from .family import WAV2LIP

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
        padded = self.pad(x) if self.pad is not None else x
        if batch_statistics:  # PyTorch's train mode, moving statistics untouched
            out = self.conv(padded)
            mean, variance = ops.moments(out, axes=[0, 1, 2])
            out = (out - mean) * ops.rsqrt(variance + self.epsilon) * ops.cast(self.bn.gamma, out.dtype) + ops.cast(self.bn.beta, out.dtype)
        elif training:
            out = self.bn(self.conv(padded), training=True)
        else:  # inference: BatchNorm folded into the conv - one pass over the activations, not three
            kernel, bias = self.folded_kernel_and_bias()
            out = ops.conv(padded, kernel, strides=self.strides, padding="valid") + bias
        if self.residual:
            out = out + x
        return ops.relu(out)

    def folded_kernel_and_bias(self):
        """The conv's kernel and bias with inference BatchNorm folded in (each output channel scaled
        by gamma / sqrt(moving variance + eps), its moving mean and beta moved into the bias)."""
        scale = self.bn.gamma * ops.rsqrt(self.bn.moving_variance + self.epsilon)
        kernel = self.conv.kernel * scale
        bias = (self.conv.bias - self.bn.moving_mean) * scale + self.bn.beta
        return ops.cast(kernel, self.compute_dtype), ops.cast(bias, self.compute_dtype)

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


@keras.saving.register_keras_serializable(package="syncnet")
class Wav2LipSyncNet(CosineExpert):
    """Wav2Lip's expert (see CosineExpert): frames (batch, 5, 48, 96, 3) RGB lower faces in [0, 255],
    audio (batch, 80, 16) mel. `width` < 1 makes a narrower network of the same shape (tests, quick
    runs); the published one is width 1."""

    family = WAV2LIP
    preset = "wav2lip"  # the shards it reads (`syncnet preprocess --preset`): any width reads the same

    def __init__(self, width: float = 1.0, calibration=None, **kwargs):
        super().__init__(calibration=calibration, **kwargs)
        self.width = width
        self.face_encoder = ConvEncoder(FACE_PLAN, width, name="face_encoder", dtype=self.dtype_policy)
        self.audio_encoder = ConvEncoder(AUDIO_PLAN, width, name="audio_encoder", dtype=self.dtype_policy)
        self.face_encoder.build((None, *self.family.frame_size, 3 * self.family.window_frames))
        self.audio_encoder.build((None, *self.family.audio_shape, 1))
        self.built = True

    embedding_dim = property(lambda self: max(1, round(FACE_PLAN[-1][0] * self.width)))

    def encode_visual(self, stacked, training, batch_statistics):
        return self.face_encoder(stacked, training=training, batch_statistics=batch_statistics)

    def encode_audio(self, audio, training, batch_statistics):
        return self.audio_encoder(audio, training=training, batch_statistics=batch_statistics)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


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
