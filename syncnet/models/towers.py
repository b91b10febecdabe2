"""The visual and audio towers, built from one definition: a plan of conv and pool steps.

Every tower is: [conv -> BatchNorm -> ReLU, with max-pools in between] -> flatten -> an MLP head
(Dense 512 -> BatchNorm -> ReLU -> Dense embedding). The plans below are syncnet_python's
`SyncNetModel.py` layer for layer; the `paper` preset runs the audio plan at a width multiplier and
a smaller lip plan on 112 px grayscale mouths averaged to 56 px.

The visual towers are 2-D with the 5 frames stacked into the channels (the paper's "early fusion").
For syncnet_python's lip tower that is exact, not an approximation: its first Conv3D has a temporal
kernel of 5 over 5 frames (one output step), and every later layer a temporal kernel of 1, so its
Conv3D over (5, H, W, 3) equals a Conv2D over (H, W, 15) with channel 3 t + c (the converter reorders
the kernels so). TensorFlow's CPU Conv2D runs that first layer 1.8x faster than its Conv3D.

PyTorch pads symmetrically *before* a strided conv or pool; Keras' 'same' pads asymmetrically
(more on the right), so every padding here is an explicit ZeroPadding layer and every conv/pool
is 'valid'. Zero-padding before a max-pool equals PyTorch's -inf padding because the pool always
follows a ReLU (inputs >= 0).
"""

from dataclasses import dataclass

import keras
import numpy as np

from .. import hyperparameters as hp
from ..errors import UserError


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: tuple
    strides: tuple | int = 1
    padding: tuple | int = 0


@dataclass(frozen=True)
class Pool:
    size: tuple
    strides: tuple | int
    padding: tuple | int = 0


# syncnet_python `netcnnaud`: input 13 x 20 x 1 (MFCC coefficients x time steps).
AUDIO_PLAN = (
    Conv(64, (3, 3), padding=1),
    # (syncnet_python has a 1x1 max-pool here: an identity, left out.)
    Conv(192, (3, 3), padding=1),
    Pool((3, 3), strides=(1, 2)),
    Conv(384, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Pool((3, 3), strides=(2, 2)),
    Conv(512, (5, 4)),
)

# syncnet_python `netcnnlip` on 224 x 224 RGB faces, its Conv3D kernels (5, 7, 7), (1, 5, 5), (1, 3, 3)...
# as 2-D kernels over the 5 x 3 stacked channels (see above).
FACE_PLAN_2D = (
    Conv(96, (7, 7), strides=2),  # 224 -> 109
    Pool((3, 3), strides=2),  # -> 54
    Conv(256, (5, 5), strides=2, padding=1),  # -> 26
    Pool((3, 3), strides=2, padding=1),  # -> 13
    Conv(256, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Pool((3, 3), strides=2),  # -> 6
    Conv(512, (6, 6)),  # -> 1
)

# The `paper` preset's lip tower: 112 px grayscale mouth crops, averaged 2 x 2 to 56 px (sync lives
# in the lips' opening and shape, not in texture), then a plan of syncnet_python's shape (conv 96,
# pool, conv 256, pool, 3 x 3 convs, pool, conv 512) with smaller kernels and one 3 x 3 conv fewer:
# 31 M multiply-adds per window, against 71 M for syncnet_python's plan on 112 px at the same width.
# (The preset's audio tower, at a quarter width, costs 15 M against 61 M at half width.)
MOUTH_PLAN_2D = (
    Conv(96, (5, 5), strides=2, padding=2),  # 56 -> 28
    Pool((3, 3), strides=2, padding=1),  # -> 14
    Conv(256, (3, 3), padding=1),
    Pool((3, 3), strides=2, padding=1),  # -> 7
    Conv(256, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Pool((3, 3), strides=2, padding=1),  # -> 4
    Conv(512, (4, 4)),  # -> 1
)


def conv_stack(plan, width: float, bn_epsilon: float, name: str) -> list:
    """The 2-D layers of a plan, conv widths multiplied by `width` (the last conv's too)."""
    layers, conv_index, pool_index = [], 0, 0
    for step in plan:
        if step.padding:  # PyTorch pads before the conv or pool, symmetrically
            layers.append(keras.layers.ZeroPadding2D(step.padding))
        if isinstance(step, Conv):
            layers += [
                keras.layers.Conv2D(
                    max(1, round(step.filters * width)),
                    step.kernel,
                    strides=step.strides,
                    name=f"{name}_conv{conv_index}",
                ),
                keras.layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.9, name=f"{name}_bn{conv_index}"),
                keras.layers.ReLU(),
            ]
            conv_index += 1
        else:
            layers.append(keras.layers.MaxPooling2D(step.size, strides=step.strides, name=f"{name}_pool{pool_index}"))
            pool_index += 1
    return layers


def embedding_mlp(hidden: int, embedding_dim: int, bn_epsilon: float, name: str) -> list:
    """syncnet_python's `netfc*`: Linear -> BatchNorm1d -> ReLU -> Linear."""
    return [
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, name=f"{name}_fc0"),
        keras.layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.9, name=f"{name}_fc_bn"),
        keras.layers.ReLU(),
        keras.layers.Dense(embedding_dim, name=f"{name}_fc1"),
    ]


def build_audio_tower(width: float, embedding_dim: int, bn_epsilon: float) -> keras.Sequential:
    """(batch, 13, 20) MFCC window -> (batch, embedding_dim)."""
    layers = [
        keras.Input((hp.MFCC_NUM_CEPSTRA, hp.WINDOW_MFCC_STEPS)),
        keras.layers.Reshape((hp.MFCC_NUM_CEPSTRA, hp.WINDOW_MFCC_STEPS, 1)),
        *conv_stack(AUDIO_PLAN, width, bn_epsilon, "audio"),
        *embedding_mlp(max(1, round(512 * width)), embedding_dim, bn_epsilon, "audio"),
    ]
    return keras.Sequential(layers, name="audio_tower")


# The `lips` preset's visual tower reads the frame encoder's (3, 6, 512) feature map per frame
# (syncnet.models.lip_encoder), stored as uint8 codes 0..255 of its ReLU6 outputs 0..6.
LIP_FEATURE_SHAPE = (3, 6, 512)
LIP_FEATURE_SCALE = 255.0 / 6.0  # feature code per ReLU6 unit
LIP_FEATURE_DROPOUT = 0.5  # of the encoder's features, in training: 77 minutes of footage overfit fast
LIP_MAP_CHANNELS = 64  # the map's 512 channels mixed down per position, the 3 x 6 layout kept


def lip_feature_codes(features: np.ndarray) -> np.ndarray:
    """The frame encoder's output (codes as floats, see SyncNet.encode_frames) as the uint8 codes
    shards store - and scoring reads, so both see the same numbers."""
    return np.clip(np.rint(features), 0, 255).astype(np.uint8)


def build_lip_feature_tower(width: float, embedding_dim: int, bn_epsilon: float) -> keras.Sequential:
    """(batch, 5, 3, 6, 512) frame-encoder feature codes 0..255 -> (batch, embedding_dim).

    Per frame, a 1 x 1 conv mixes each position's channels down (where in the lips, what it
    looks like) and a Dense shared by the 5 frames projects the map (the lip shape); then the 5
    projections together go through the MLP head (how it moves)."""
    frames = hp.WINDOW_FRAMES
    rows, columns, _ = LIP_FEATURE_SHAPE
    per_frame = max(1, round(512 * width))
    return keras.Sequential(
        [
            keras.Input((frames, *LIP_FEATURE_SHAPE)),
            keras.layers.Rescaling(1.0 / LIP_FEATURE_SCALE),
            keras.layers.Dropout(LIP_FEATURE_DROPOUT),
            keras.layers.Conv3D(LIP_MAP_CHANNELS, 1, name="visual_map_conv"),  # kernel 1: per frame and position
            keras.layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.9, name="visual_map_bn"),
            keras.layers.ReLU(),
            keras.layers.Reshape((frames, rows * columns * LIP_MAP_CHANNELS)),
            keras.layers.Dense(per_frame, name="visual_frame_fc"),
            keras.layers.BatchNormalization(epsilon=bn_epsilon, momentum=0.9, name="visual_frame_bn"),
            keras.layers.ReLU(),
            *embedding_mlp(max(1, round(1024 * width)), embedding_dim, bn_epsilon, "visual"),
        ],
        name="visual_tower",
    )


def build_visual_tower(visual_input: str, width: float, embedding_dim: int, bn_epsilon: float) -> keras.Sequential:
    """(batch, 5, H, W, C) frames with pixel values in [0, 255] -> (batch, embedding_dim).

    `visual_input="mouth"`: 112 x 112 grayscale mouth crops, pixels rescaled to [-1, 1] and
    averaged 2 x 2.
    `visual_input="face"`: syncnet_python's 224 x 224 RGB face crops, raw [0, 255] pixels as
    syncnet_python feeds them. Either way the 5 frames are stacked into the channels (frame t,
    channel c -> channel C t + c) of a 2-D stem.
    `visual_input="lips"`: the frame encoder's features (`build_lip_feature_tower`).
    """
    if visual_input == "lips":
        return build_lip_feature_tower(width, embedding_dim, bn_epsilon)
    frames = hp.WINDOW_FRAMES
    if visual_input == "mouth":
        size, channels, plan = hp.MOUTH_CROP_SIZE, 1, MOUTH_PLAN_2D
        stem = [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0), keras.layers.AveragePooling2D(2)]
    elif visual_input == "face":
        size, channels, plan, stem = hp.FACE_CROP_SIZE, 3, FACE_PLAN_2D, []
    else:
        raise UserError(f"visual_input must be 'mouth', 'face' or 'lips', got {visual_input!r}")
    layers = [
        keras.Input((frames, size, size, channels)),
        keras.layers.Permute((2, 3, 1, 4)),  # (H, W, frames, C)
        keras.layers.Reshape((size, size, frames * channels)),  # the frames become channels
        *stem,
        *conv_stack(plan, width, bn_epsilon, "visual"),
    ]
    layers += embedding_mlp(max(1, round(512 * width)), embedding_dim, bn_epsilon, "visual")
    return keras.Sequential(layers, name="visual_tower")
