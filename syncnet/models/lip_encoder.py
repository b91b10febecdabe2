"""The `lips` preset's frame encoder: vvadlrs3's MobileNet over 50 x 100 RGB lip crops, frozen.

vvadlrs3 (Lubitz et al., "The VVAD-LRS3 Dataset for Visual Voice Activity Detection", 2023; LGPL,
`pip install --no-deps vvadlrs3==0.2.0`) ships `bestLipEndToEnd.h5`: a Keras 2.2.4 model whose
per-frame part is a MobileNet (alpha 1, no top) over the box of dlib points 48-67, resized into
50 x 100 with its aspect kept and zero-padded on the right or bottom, fed raw RGB 0..255 (no
MobileNet preprocessing: with x / 255 its features are all zero). Trained to tell speaking from
silent lips on ~67 k LRS3 samples, its features know moving lips across thousands of faces - what
our 77 minutes of footage cannot teach.

We keep its first 11 blocks, up to `conv_pw_11_relu`: a (3, 6, 512) map per frame at stride 16.
Its last two blocks pool the lips into a single row (1, 3, 1024), which leaves no vertical
resolution for the mouth's opening; with those, a tower trained on our footage found the offsets of
held-out speakers no better than the `paper` preset's mouth crops (docs/training.md). The map is
what the `lips` preset's visual tower reads, and what `syncnet preprocess --preset lips` stores.

The wheel pins TensorFlow 2.3 in its metadata, so it cannot be a normal dependency: install it with
`--no-deps` (only its .h5 file is read, with h5py). Only building a new `lips` model needs it; a
saved one carries the encoder's weights - LGPL-licensed weights, which whoever distributes such a
file must respect.
"""

import importlib.util
from pathlib import Path

import keras

from .. import hyperparameters as hp
from ..errors import UserError

VVADLRS3_INSTALL = "pip install --no-deps vvadlrs3==0.2.0"
VVADLRS3_FILE = "bestLipEndToEnd.h5"
_VVADLRS3_GROUP = "model_weights/time_distributed_1"  # the TimeDistributed(MobileNet) of its Sequential
# Keras 2's weight names per layer kind, in the order Keras 3's layers hold their variables.
_WEIGHT_ORDER = {
    "Conv2D": ("kernel",),
    "DepthwiseConv2D": ("depthwise_kernel",),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


LAST_LAYER = "conv_pw_11_relu"


def build_lip_encoder() -> keras.Model:
    """(n, 50, 100, 3) RGB lip crops, 0..255 -> (n, 3, 6, 512) MobileNet features (ReLU6: 0..6), the
    network cut after LAST_LAYER. Untrained: `load_vvadlrs3_weights` gives it vvadlrs3's weights."""
    mobilenet = keras.applications.MobileNet(input_shape=(hp.LIP_CROP_HEIGHT, hp.LIP_CROP_WIDTH, 3), include_top=False, weights=None)
    return keras.Model(mobilenet.input, mobilenet.get_layer(LAST_LAYER).output, name="lip_encoder")


def vvadlrs3_weights_path() -> Path:
    """vvadlrs3's `bestLipEndToEnd.h5`, found without importing the package; a one-line error
    with the install command when it is absent."""
    spec = importlib.util.find_spec("vvadlrs3")
    path = Path(spec.submodule_search_locations[0], VVADLRS3_FILE) if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the lips preset starts from vvadlrs3's lip encoder, which is not installed: {VVADLRS3_INSTALL}")
    return path


def load_vvadlrs3_weights(encoder: keras.Model, path=None) -> int:
    """Copy vvadlrs3's MobileNet weights into `encoder` layer by layer, by name; returns the number of
    weighted layers set. Every weighted layer of the encoder must be found with the right shapes."""
    import h5py

    path = Path(path) if path is not None else vvadlrs3_weights_path()
    loaded = 0
    with h5py.File(path, "r") as file:
        group = file[_VVADLRS3_GROUP]
        for layer in encoder.layers:
            if not layer.weights:
                continue
            kind = type(layer).__name__
            if layer.name not in group or kind not in _WEIGHT_ORDER:
                raise UserError(f"{path} has no weights for the encoder's layer {layer.name} ({kind})")
            arrays = [group[layer.name][f"{name}:0"][()] for name in _WEIGHT_ORDER[kind]]
            layer.set_weights(arrays)  # raises on a shape mismatch
            loaded += 1
    return loaded
