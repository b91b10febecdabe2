"""The visual and audio towers, built from one definition: a plan of conv and pool steps.

Every tower is: [conv -> BatchNorm -> ReLU, with max-pools in between] -> flatten -> an MLP head
(Dense 512 -> BatchNorm -> ReLU -> Dense embedding). The plans below are syncnet_python's
`SyncNetModel.py` layer for layer; the `paper` preset runs the same plans at a width multiplier,
with the 5 grayscale frames taken as the channels of a 2-D stem (the paper's "early fusion"),
which trains ~4x faster on a CPU than the Conv3D stem on RGB faces.

PyTorch pads symmetrically *before* a strided conv or pool; Keras' 'same' pads asymmetrically
(more on the right), so every padding here is an explicit ZeroPadding layer and every conv/pool
is 'valid'. Zero-padding before a max-pool equals PyTorch's -inf padding because the pool always
follows a ReLU (inputs >= 0).
"""

from dataclasses import dataclass

import keras

from .. import hyperparameters as hp


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

# syncnet_python `netcnnlip`: input 5 x 224 x 224 x 3 (time x height x width x RGB), Conv3D.
FACE_PLAN_3D = (
    Conv(96, (5, 7, 7), strides=(1, 2, 2)),
    Pool((1, 3, 3), strides=(1, 2, 2)),
    Conv(256, (1, 5, 5), strides=(1, 2, 2), padding=(0, 1, 1)),
    Pool((1, 3, 3), strides=(1, 2, 2), padding=(0, 1, 1)),
    Conv(256, (1, 3, 3), padding=(0, 1, 1)),
    Conv(256, (1, 3, 3), padding=(0, 1, 1)),
    Conv(256, (1, 3, 3), padding=(0, 1, 1)),
    Pool((1, 3, 3), strides=(1, 2, 2)),
    Conv(512, (1, 6, 6)),
)

# The same plan for 112 x 112 mouth crops with the 5 frames as channels (2-D), `paper` preset.
MOUTH_PLAN_2D = (
    Conv(96, (7, 7), strides=2),  # 112 -> 53
    Pool((3, 3), strides=2),  # -> 26
    Conv(256, (5, 5), strides=2, padding=1),  # -> 12
    Pool((3, 3), strides=2, padding=1),  # -> 6
    Conv(256, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Conv(256, (3, 3), padding=1),
    Pool((3, 3), strides=2),  # -> 2
    Conv(512, (2, 2)),  # -> 1
)


def _padding_layer(padding, rank):
    if padding == 0 or padding == (0,) * rank:
        return None
    layer = keras.layers.ZeroPadding2D if rank == 2 else keras.layers.ZeroPadding3D
    return layer(padding)


def conv_stack(plan, rank: int, width: float, bn_epsilon: float, name: str) -> list:
    """The layers of a plan, conv widths multiplied by `width` (the last conv's too)."""
    conv_layer = keras.layers.Conv2D if rank == 2 else keras.layers.Conv3D
    pool_layer = keras.layers.MaxPooling2D if rank == 2 else keras.layers.MaxPooling3D
    layers, conv_index, pool_index = [], 0, 0
    for step in plan:
        padding = _padding_layer(step.padding, rank)
        if isinstance(step, Conv):
            if padding:
                layers.append(padding)
            layers += [
                conv_layer(
                    max(1, round(step.filters * width)),
                    step.kernel,
                    strides=step.strides,
                    name=f"{name}_conv{conv_index}",
                ),
                keras.layers.BatchNormalization(
                    epsilon=bn_epsilon, momentum=0.9, name=f"{name}_bn{conv_index}"
                ),
                keras.layers.ReLU(),
            ]
            conv_index += 1
        else:
            if padding:
                layers.append(padding)
            layers.append(pool_layer(step.size, strides=step.strides, name=f"{name}_pool{pool_index}"))
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
        *conv_stack(AUDIO_PLAN, 2, width, bn_epsilon, "audio"),
        *embedding_mlp(max(1, round(512 * width)), embedding_dim, bn_epsilon, "audio"),
    ]
    return keras.Sequential(layers, name="audio_tower")


def build_visual_tower(
    visual_input: str, width: float, embedding_dim: int, bn_epsilon: float
) -> keras.Sequential:
    """(batch, 5, H, W, C) frames with pixel values in [0, 255] -> (batch, embedding_dim).

    `visual_input="mouth"`: 112 x 112 grayscale mouth crops, 2-D stem over the 5 frames as channels,
    pixels rescaled to [-1, 1]. `visual_input="face"`: syncnet_python's 224 x 224 RGB face crops, Conv3D,
    raw [0, 255] pixels as syncnet_python feeds them.
    """
    frames = hp.WINDOW_FRAMES
    if visual_input == "mouth":
        size = hp.MOUTH_CROP_SIZE
        layers = [
            keras.Input((frames, size, size, 1)),
            keras.layers.Reshape((frames, size, size)),
            keras.layers.Permute((2, 3, 1)),  # (H, W, frames): the frames become channels
            keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),
            *conv_stack(MOUTH_PLAN_2D, 2, width, bn_epsilon, "visual"),
        ]
    elif visual_input == "face":
        size = hp.FACE_CROP_SIZE
        layers = [
            keras.Input((frames, size, size, 3)),
            *conv_stack(FACE_PLAN_3D, 3, width, bn_epsilon, "visual"),
        ]
    else:
        raise ValueError(f"visual_input must be 'mouth' or 'face', got {visual_input!r}")
    layers += embedding_mlp(max(1, round(512 * width)), embedding_dim, bn_epsilon, "visual")
    return keras.Sequential(layers, name="visual_tower")
