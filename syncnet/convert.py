"""`syncnet convert-weights`: a published expert's PyTorch checkpoint -> a `.keras` file that carries its
family. The file is recognised by its keys: syncnet_python's `syncnet_v2.model` (this module's table
below) or Wav2Lip's `lipsync_expert.pth` (syncnet.models.wav2lip), whole training checkpoints
(`{'state_dict', 'optimizer', ...}`), DataParallel's `module.` prefixes and bare state dicts alike,
in PyTorch's legacy and zip formats. Other files are named when we know them (Wav2Lip's generator,
its visual quality discriminator) and refused with the list of what is supported.

## syncnet_python

The `syncnet_v2` preset is syncnet_python's `SyncNetModel.py` layer for layer, so conversion is a
fixed table: each PyTorch Conv / BatchNorm / Linear, named by its index in its `nn.Sequential`,
goes to one Keras layer, with the weight layouts transposed:

    Conv2d (out, in, kh, kw)      -> Conv2D (kh, kw, in, out)
    Conv3d (out, in, kt, kh, kw)  -> Conv2D (kh, kw, kt * in, out), input channel in * t + c
    Linear (out, in)              -> Dense (in, out)
    BatchNorm weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance

The lip tower's Conv3Ds become Conv2Ds over the 5 frames stacked into the channels (exact: the first
has a temporal kernel of 5 over 5 frames, the rest of 1; see syncnet/models/towers.py). One more
change: syncnet_python reads its frames with OpenCV, i.e. in BGR order, while our frames
are RGB, so the first lip convolution's input channels are reversed - the converted model given RGB
frames computes exactly what syncnet_python computes on the same frames in BGR.

The file is checked against the table before anything is written: a missing key, an unexpected key
or a wrong shape is refused, naming the first one. Our sigmoid head has no counterpart in
syncnet_python and stays at its initial values: distances, offset and confidence of the converted
model are syncnet_python's, its sync probability means nothing until `syncnet calibrate`.

PyTorch is needed only here (the `convert` extra).
"""

import os
import pickle
import sys
import time

import keras
import numpy as np

from .errors import UserError, install_hint
from .loading import save_model
from .models.siamese import SyncNet, build_model

TORCH_MISSING = f"converting needs PyTorch: {install_hint('convert', 'torch')}"

# (syncnet_python module, our layer), in the order SyncNetModel.py defines them. The index is the
# module's position in its nn.Sequential; the ReLUs and max-pools in between hold no weights.
LAYER_MAP = (
    ("netcnnaud.0", "audio_conv0"),
    ("netcnnaud.1", "audio_bn0"),
    ("netcnnaud.4", "audio_conv1"),
    ("netcnnaud.5", "audio_bn1"),
    ("netcnnaud.8", "audio_conv2"),
    ("netcnnaud.9", "audio_bn2"),
    ("netcnnaud.11", "audio_conv3"),
    ("netcnnaud.12", "audio_bn3"),
    ("netcnnaud.14", "audio_conv4"),
    ("netcnnaud.15", "audio_bn4"),
    ("netcnnaud.18", "audio_conv5"),
    ("netcnnaud.19", "audio_bn5"),
    ("netfcaud.0", "audio_fc0"),
    ("netfcaud.1", "audio_fc_bn"),
    ("netfcaud.3", "audio_fc1"),
    ("netfclip.0", "visual_fc0"),
    ("netfclip.1", "visual_fc_bn"),
    ("netfclip.3", "visual_fc1"),
    ("netcnnlip.0", "visual_conv0"),
    ("netcnnlip.1", "visual_bn0"),
    ("netcnnlip.4", "visual_conv1"),
    ("netcnnlip.5", "visual_bn1"),
    ("netcnnlip.8", "visual_conv2"),
    ("netcnnlip.9", "visual_bn2"),
    ("netcnnlip.11", "visual_conv3"),
    ("netcnnlip.12", "visual_bn3"),
    ("netcnnlip.14", "visual_conv4"),
    ("netcnnlip.15", "visual_bn4"),
    ("netcnnlip.18", "visual_conv5"),
    ("netcnnlip.19", "visual_bn5"),
)

# The conv whose input is the frames: its input channels go from BGR to RGB, and its temporal
# kernel spans the 5 frames our 2-D stem stacks into channels.
FIRST_LIP_CONV = "netcnnlip.0"
STACKED_FRAMES = 5

# PyTorch >= 0.4.1 saves a step counter with every BatchNorm; it holds no weights, and files saved
# before it existed lack it, so it is accepted but not required.
BATCHNORM_COUNTER = "num_batches_tracked"


def import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(TORCH_MISSING) from None
    return torch


PUBLISHED_NAMES = {
    "syncnet_v2": "syncnet_python's SyncNetModel",
    "wav2lip": "Wav2Lip's expert discriminator",
    "latentsync": "LatentSync's SyncNet (StableSyncNet)",
}
SUPPORTED = "syncnet_python's syncnet_v2.model, Wav2Lip's lipsync_expert.pth, LatentSync's stable_syncnet.pt / latentsync_syncnet.pt"


def load_syncnet_python_state(path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file, as float32 numpy arrays, in the file's order.

    A training checkpoint's `state_dict` entry is taken (Wav2Lip saves `{'state_dict', 'optimizer',
    'global_step', 'global_epoch'}`) and DataParallel's `module.` prefix dropped. Only tensors and
    plain containers are unpickled unless `allow_pickle`, which also accepts a whole pickled module
    (its `state_dict()` is taken) - unpickling runs code from the file, so only for files you trust.
    """
    torch = import_torch()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:  # not a PyTorch file: torch raises UnpicklingError, KeyError, EOFError, ...
        if not allow_pickle and "Unsupported global" in str(error):  # a class reference: a pickled object
            raise UserError(
                f"{path} holds more than tensors (a pickled module?); pass --allow-pickle to load it if you trust the file"
            ) from None
        if _truncated(error):
            raise UserError(
                f"{path} is cut short: it ends before its tensors' data ({os.path.getsize(path):,} bytes; "
                "a download that did not finish?) - fetch the whole file again"
            ) from None
        raise UserError(f"cannot read {path} as a PyTorch file: {_describe(error)}") from None
    if isinstance(loaded, torch.nn.Module):
        loaded = loaded.state_dict()
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):  # a training checkpoint
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):  # OrderedDict is a dict
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    state = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
        name = key.removeprefix("module.")  # saved from a DataParallel model
        state[name] = value.detach().cpu().float().numpy()  # float32 whatever the file's precision
    return state


def _truncated(error: BaseException) -> bool:
    """torch.load's errors for a file that ends early: the legacy format runs out of bytes reading
    its storages (EOFError, or a RuntimeError about reading the file), the zip format has no
    central directory."""
    text = str(error).lower()
    return isinstance(error, EOFError) or any(
        sign in text for sign in ("unexpected eof", "ran out of input", "failed finding central directory", "file might be corrupted")
    )


def _describe(error: BaseException) -> str:
    """The error's type, and its first line where that says something (torch's unpickler pages don't)."""
    text = str(error).strip()
    if not text or isinstance(error, pickle.UnpicklingError):
        return type(error).__name__
    return f"{type(error).__name__}: {text.splitlines()[0]}"


def keras_weights(state: dict[str, np.ndarray], model: SyncNet) -> dict[str, list[np.ndarray]]:
    """Our layer name -> its weights in Keras layout, from a syncnet_python state dict.

    Raises ValueError naming the first key that is missing, has the wrong shape, or is not ours.
    """
    layers = {layer.name: layer for tower in (model.audio_tower, model.visual_tower) for layer in tower.layers}
    weights, used = {}, set()

    def take(key: str, expected: tuple) -> np.ndarray:
        if key not in state:
            raise UserError(f"missing key {key}")
        if state[key].shape != expected:
            raise UserError(f"{key}: expected {expected}, got {state[key].shape}")
        used.add(key)
        return state[key]

    for module, layer_name in LAYER_MAP:
        layer = layers[layer_name]
        keras_shapes = [tuple(w.shape) for w in layer.weights]
        if isinstance(layer, keras.layers.Conv2D) and module.startswith(
            "netcnnlip."
        ):  # Conv3d (out, in, kt, kh, kw) -> Conv2D (kh, kw, kt * in, out)
            (kh, kw, stacked, out), bias_shape = keras_shapes
            frames = STACKED_FRAMES if module == FIRST_LIP_CONV else 1
            kernel = take(f"{module}.weight", (out, stacked // frames, frames, kh, kw))
            if module == FIRST_LIP_CONV:
                kernel = kernel[:, ::-1]  # BGR -> RGB input channels
            kernel = np.transpose(kernel, (3, 4, 2, 1, 0)).reshape(kh, kw, stacked, out)  # channel in * t + c
            weights[layer_name] = [kernel, take(f"{module}.bias", bias_shape)]
        elif not isinstance(layer, keras.layers.BatchNormalization):  # Conv2D or Dense
            kernel_shape, bias_shape = keras_shapes
            # Keras (k..., in, out) <- PyTorch (out, in, k...): reverse the last two, move them first.
            torch_shape = (kernel_shape[-1], kernel_shape[-2], *kernel_shape[:-2])
            kernel = np.transpose(take(f"{module}.weight", torch_shape), (*range(2, len(torch_shape)), 1, 0))
            weights[layer_name] = [kernel, take(f"{module}.bias", bias_shape)]
        else:  # BatchNorm: gamma, beta, moving mean, moving variance, each (channels,)
            names = ("weight", "bias", "running_mean", "running_var")
            weights[layer_name] = [take(f"{module}.{name}", shape) for name, shape in zip(names, keras_shapes)]
            if f"{module}.{BATCHNORM_COUNTER}" in state:
                take(f"{module}.{BATCHNORM_COUNTER}", ())

    unexpected = [key for key in state if key not in used]
    if unexpected:
        raise UserError(f"unexpected key {unexpected[0]}")
    return weights


def syncnet_python_model(state: dict[str, np.ndarray]) -> SyncNet:
    """A `syncnet_v2` SyncNet with syncnet_python's weights."""
    model = build_model("syncnet_v2")
    weights = keras_weights(state, model)
    for tower in (model.audio_tower, model.visual_tower):
        for layer in tower.layers:
            if layer.name in weights:
                layer.set_weights(weights[layer.name])
    return model


def is_syncnet_python(keys) -> bool:
    return any(key.startswith(("netcnnaud.", "netcnnlip.")) for key in keys)


def recognise(state: dict[str, np.ndarray]) -> tuple[str, object]:
    """(the family's name, the function from the state dict to the Keras model) for a state dict,
    or a UserError saying what the file is, or that it is none of the supported experts."""
    from .models import latentsync, wav2lip

    keys = list(state)
    if is_syncnet_python(keys):
        return "syncnet_v2", syncnet_python_model
    other = wav2lip.other_wav2lip_checkpoint(keys)
    if other:
        raise UserError(f"this looks like {other}; convert-weights reads {SUPPORTED}")
    if wav2lip.is_checkpoint(keys):
        return "wav2lip", wav2lip.convert_state_dict
    other = latentsync.other_latentsync_checkpoint(keys)
    if other:
        raise UserError(f"this looks like {other}; convert-weights reads {SUPPORTED}")
    if latentsync.is_checkpoint(keys):
        return "latentsync", latentsync.convert_state_dict
    raise UserError(
        f"not a checkpoint of a supported expert (first keys: {', '.join(keys[:3]) or 'none'}); convert-weights reads {SUPPORTED}"
    )


def convert_weights(state_dict_path, out_path, allow_pickle: bool = False):
    """Write a published expert's weights as a `.keras` file of its family; return the converted model.

    The file appears whole or not at all (`save_model` writes beside it, then renames); nothing is
    written when the checkpoint is refused.
    """
    state_dict_path, out_path = os.fspath(state_dict_path), os.fspath(out_path)
    if os.path.exists(out_path) and os.path.exists(state_dict_path) and os.path.samefile(state_dict_path, out_path):
        raise UserError(f"refusing to overwrite the input {state_dict_path} with the output")
    if not out_path.endswith(".keras"):
        raise UserError(f"the output must be a .keras file, got {out_path}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"output folder not found: {out_dir}")

    state = load_syncnet_python_state(state_dict_path, allow_pickle=allow_pickle)
    try:
        family, to_model = recognise(state)
    except UserError as error:
        raise UserError(f"{state_dict_path}: {error}") from None
    try:
        model = to_model(state)
    except UserError as error:
        raise UserError(f"{state_dict_path} is not {PUBLISHED_NAMES[family]}: {error}") from None
    save_model(model, out_path)
    return model


def configure_parser(parser):
    parser.add_argument("weights", help=f"a published expert's PyTorch checkpoint: {SUPPORTED}")
    parser.add_argument("output", help="the .keras file to write")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also accept a whole pickled PyTorch module (runs code from the file: trusted files only)",
    )


def run_command(args) -> int:
    try:
        import_torch()
    except ImportError as error:
        print(f"syncnet convert-weights: error: {error}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    model = convert_weights(args.weights, args.output, allow_pickle=args.allow_pickle)
    uncalibrated = " (its sync probability is uncalibrated: see syncnet calibrate)" if model.family.comparison == "l2" else ""
    found = f" ({model.description})" if hasattr(model, "description") else ""  # which version of the family
    print(
        f"wrote {args.output}: {model.family.name}{found}, {model.count_params():,} weights, in {time.perf_counter() - start:.1f} s{uncalibrated}"
    )
    return 0
