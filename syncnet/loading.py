"""Loading and saving SyncNet models, and the shipped expert: the one place that knows where
files live and how weights are stored.

    model = load_model()                    # the expert shipped in the package, with its calibration
    model = load_model("runs/best.keras")   # any .keras expert (trained, converted), with its family
    available_models()                      # the names load_model accepts
    save_model(model, "expert.keras", float16_weights=True)

`resolve_model` and `resolve_calibration` turn what a caller may pass (a SyncNet or a path or None;
a Calibration or a path or None) into the objects, for every command and library function.
"""

import contextlib
import json
import os
import warnings
import zipfile
from typing import TYPE_CHECKING

from .calibration import Calibration, load_calibration
from .errors import UserError
from .files import atomic_output

# Keras (TensorFlow: seconds) is imported inside the functions that need a model, so that a command
# can resolve a calibration and check its inputs before paying for it.
if TYPE_CHECKING:
    from .models.siamese import SyncNet

KERAS_NUMPY2_WARNING = "__array__ implementation doesn't accept a copy keyword"

DEFAULT_MODEL = "default"
# A member of our own in a .keras zip: how its weights are stored (float16: half the file).
STORAGE_NOTE = "syncnet.json"
# Loading builds the variables (initialised), reads the file's copy and assigns it, casting float16:
# LatentSync's 1.6 GB of float32 weights took 9.15 GB of peak memory over the 0.72 GB of an imported
# syncnet (bench/bench_sync_loss_families.py --family latentsync: a fresh process's peak RSS 9.87 GB).
LOAD_MEMORY_FACTOR = 6.0
# Names `load_model` accepts, and what each is. The published experts (syncnet_python's, Wav2Lip's)
# cannot ship with the package (their licences, their size): `syncnet convert-weights` makes a .keras
# file of each from its checkpoint (docs/experts.md), which `load_model` then reads by path.
NAMED_MODELS = {
    DEFAULT_MODEL: "our own expert (the paper family), shipped in the package, with its calibration",
}


def available_models() -> dict[str, str]:
    """The names `load_model` accepts, each with what it is. Any `.keras` path works too."""
    return dict(NAMED_MODELS)


def default_model_path():
    """The expert shipped inside the package (see syncnet/weights/MODEL_CARD.md)."""
    from importlib.resources import files

    return files("syncnet") / "weights" / "paper.keras"


def default_calibration_path():
    """The shipped expert's verdict, fitted by `syncnet calibrate` on speakers it never trained on."""
    from importlib.resources import files

    return files("syncnet") / "weights" / "paper.calibration.json"


def save_model(model, path, *, float16_weights: bool = False):
    """Write `model` to a `.keras` file atomically (a temp file beside it, then a rename).

    `float16_weights` stores the weights as float16 (half the size; loading casts them back to
    float32, a relative change of ~1e-3 in the distances) - how the shipped expert is stored.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise UserError(f"model files end in .keras, got {path}")
    with atomic_output(path) as temporary, _quiet_keras():
        model.save(temporary)
        if float16_weights:
            _store_weights_as_float16(temporary)


def _store_weights_as_float16(keras_file: str):
    """Rewrite the weights inside a .keras zip as float16 (a fresh HDF5 file: deleting
    datasets in place would not shrink it)."""
    import io
    import zipfile

    import h5py
    import numpy as np

    with zipfile.ZipFile(keras_file) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    compact = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as src, h5py.File(compact, "w") as dst:

        def copy(group_in, group_out):
            group_out.attrs.update(group_in.attrs)
            for key, item in group_in.items():
                if isinstance(item, h5py.Group):
                    copy(item, group_out.create_group(key))
                else:
                    data = item[()]
                    if data.dtype == np.float32:
                        data = data.astype(np.float16)
                    group_out.create_dataset(key, data=data).attrs.update(item.attrs)

        copy(src, dst)
    members["model.weights.h5"] = compact.getvalue()
    members[STORAGE_NOTE] = json.dumps({"weights_dtype": "float16"})  # Keras reads its own members only
    with zipfile.ZipFile(keras_file, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def model_path(name_or_path: str | os.PathLike | None = None) -> str:
    """The .keras file `load_model` would read, checked without loading anything (commands call it
    first, so a bad --model fails before any work)."""
    if name_or_path in (None, DEFAULT_MODEL):
        path = default_model_path()
        if not path.is_file():
            raise FileNotFoundError(
                "the default model is not installed with this package; pass a .keras file "
                "(syncnet train / syncnet convert-weights make one)"
            )
        path = str(path)
    else:
        path = os.fspath(name_or_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        if not path.endswith(".keras"):
            raise UserError(f"expected a .keras model file, got {path}")
    return path


def load_model(name_or_path: str | os.PathLike | None = None) -> "SyncNet":
    """Load an expert: a name from `available_models()` (None: "default", the shipped expert) or a
    `.keras` file - trained by `syncnet train`, or converted from a published checkpoint by
    `syncnet convert-weights` - of any family (`model.family`).

    `model.calibration` is the in-sync / tampered verdict and the `syncnet speakers` threshold fitted
    for the model, saved inside the file by `syncnet calibrate --into`; the shipped expert has its own.
    The expert computes in float32 whatever the global Keras dtype policy (a frozen expert is cheap
    next to the generator it judges, and float16 would change its numbers).
    """
    path = model_path(name_or_path)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that is there
        raise UserError(f"{path}: not a Keras model file (a .keras file is a zip archive)")
    check_memory(path)
    import keras

    from .models import EXPERT_MODELS

    try:
        with _quiet_keras(), _float32_policy():
            model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # a zip that is not a Keras model, a truncated file, ...
        raise UserError(f"cannot load {path} as a SyncNet model: {error}".splitlines()[0]) from None
    if not isinstance(model, EXPERT_MODELS):
        raise UserError(f"{path} holds a {type(model).__name__}, not a SyncNet model")
    if model.calibration is None and name_or_path in (None, DEFAULT_MODEL) and default_calibration_path().is_file():
        model.calibration = load_calibration(default_calibration_path())
    return model


def loading_memory(path) -> int:
    """Bytes of memory loading a .keras file takes at its peak, about: its weights as float32, LOAD_MEMORY_FACTOR times."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "model.weights.h5" not in names:
            return 0
        stored = archive.getinfo("model.weights.h5").file_size
        note = json.loads(archive.read(STORAGE_NOTE)) if STORAGE_NOTE in names else {}
    return int(LOAD_MEMORY_FACTOR * stored * (2 if note.get("weights_dtype") == "float16" else 1))


def available_memory() -> int | None:
    """Bytes this process can still take without swapping: the kernel's MemAvailable, or the
    container's limit less its usage where that is smaller; None where neither can be read."""
    figures = []
    try:
        with open("/proc/meminfo") as meminfo:
            figures += [int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")]
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as usage:
            text = limit.read().strip()
            if text != "max":
                figures.append(int(text) - int(usage.read()))
    except OSError:
        pass
    return min(figures) if figures else None


def check_memory(path):
    """A clear error when loading `path` needs more memory than this machine has free, instead of
    swapping for minutes (LatentSync's 401 M-weight expert takes about 9 GB)."""
    need, have = loading_memory(path), available_memory()
    if have is not None and need > have:
        raise UserError(f"{path}: loading it needs about {need / 2**30:.1f} GB of memory, this machine has {have / 2**30:.1f} GB free")


@contextlib.contextmanager
def _float32_policy():
    """Keras' global dtype policy set to float32 while a model is built (a user's mixed_float16,
    set at start-up as GPU recipes do, would otherwise build the expert's layers in float16)."""
    import keras

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


@contextlib.contextmanager
def _quiet_keras():
    """Keras 3 reads and writes its weights with np.array(tensor), which NumPy 2 answers with a
    DeprecationWarning per weight (TensorFlow's tensors lack `__array__(copy=)`): dozens a save,
    none of them ours to fix. Silenced here, where they arise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", KERAS_NUMPY2_WARNING, DeprecationWarning)
        yield


def resolve_model(model: "SyncNet | str | os.PathLike | None") -> tuple["SyncNet", str]:
    """(the expert, its name in results) for an expert model, a .keras path, or None (the shipped expert)."""
    from .models import EXPERT_MODELS

    if isinstance(model, EXPERT_MODELS):
        return model, model.name
    return load_model(model), DEFAULT_MODEL if model is None else os.fspath(model)


def resolve_calibration(calibration: Calibration | str | os.PathLike | None) -> Calibration | None:
    """A Calibration, or the path of one, or None."""
    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    return load_calibration(calibration)
