"""SyncNet lip-sync expert: does the mouth in a video move with its speech?

import syncnet
model = syncnet.load_model()                 # the shipped expert, or a .keras path
result = syncnet.score_video("clip.mp4")     # offset, LSE-D, LSE-C, verdict, P(tampered)
loss = syncnet.SyncLoss(model)(frames, mfcc)  # frozen expert as a generator loss
"""

import importlib
import os

# Keep TensorFlow's C++ log off stderr - its start-up chatter, and on a machine without a GPU the
# ERROR line "failed call to cuInit" - in the `syncnet` command and in a user's script alike: set
# before anything here imports TensorFlow, unless the user chose a level. Python exceptions are not affected.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.2.0"  # the one place: pyproject.toml reads it

# Public name -> the module that defines it. Imported on first use: TensorFlow takes seconds to
# import, and `syncnet --help` needs none of it.
_EXPORTS = {
    "SyncNet": "syncnet.models.siamese",
    "build_model": "syncnet.models",
    "available_models": "syncnet.loading",
    "load_model": "syncnet.loading",
    "save_model": "syncnet.loading",
    "SyncLoss": "syncnet.sync_loss",
    "score_video": "syncnet.scoring",
    "ScoreResult": "syncnet.scoring",
    "detect_speakers": "syncnet.speakers",
    "calibrate": "syncnet.calibrating",
    "Calibration": "syncnet.calibration",
    "fix_video": "syncnet.fixing",
    "load_media": "syncnet.video",
    "expert_crops": "syncnet.faces",
    "Media": "syncnet.video",
    "mfcc": "syncnet.audio",
    "UserError": "syncnet.errors",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name == "audio":
        return importlib.import_module("syncnet.audio")
    raise AttributeError(f"module 'syncnet' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", *_EXPORTS]
