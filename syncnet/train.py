"""Training a SyncNet expert on preprocessed shards (see `syncnet preprocess`).

    syncnet train DATA_DIR --out RUN_DIR [--preset paper] [--epochs 20] [--resume]

The card's recipe: BCE on the head's P(in sync) over half in-order, half shuffled pairs (plus the
paper's same-clip shifted negatives), Adam 1e-4, batch 8; the paper's contrastive loss on the
distance as an option; and the multi-way loss of "Perfect Match" (Chung et al., 2019): groups of
one clip's windows a few frames apart, each window against every audio window of its group (its own,
and the same speech 1..30 frames off), softmax over the negated distances, plus a class-balanced BCE
that fits the head - the offset search as the training task. Only same-clip audio competes:
another clip's audio can be told apart by voice and face alone, which does not teach sync (see
docs/training.md for the trial). Validation is speaker-disjoint and reports, per epoch, pair accuracy,
ROC-AUC and offset accuracy: the fraction of validation windows whose argmin over +-15 frames lands
within +-1 frame of the truth, for single windows and for 15-window averages.

RUN_DIR holds `last.keras` and `best.keras` (written atomically every epoch), `backup/` (optimizer
state and epoch, for `--resume`), `log.csv`, `tensorboard/` and `config.json`. A RUN_DIR that holds a
run is refused unless it is resumed (`--resume`) or replaced (`--overwrite`). Ctrl-C keeps what the
last finished epoch wrote: `--resume` goes on from there.

Scale-out uses TensorFlow's own engine: MirroredStrategy over the visible GPUs, or
MultiWorkerMirroredStrategy across machines when TF_CONFIG is set.
"""

import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass

import keras
import tensorflow as tf

from . import data
from . import hyperparameters as hp
from .errors import UserError
from .evaluation import offset_accuracy
from .files import uninterrupted
from .loading import load_model, save_model
from .models import PRESETS, BalancedBinaryCrossentropy, ContrastiveLoss, MultiwayLoss, SyncNet, build_model
from .models.lip_encoder import VVADLRS3_INSTALL, vvadlrs3_weights_path

FREEZE_CHOICES = ("none", "convs", "visual", "audio")
LOSSES = ("bce", "contrastive", "multiway")
# A family's own recipe, where it has one, for the options the command line leaves unset. Wav2Lip's
# color_syncnet_train.py: BCE on the cosine, each window against its own audio or the audio of a
# window from elsewhere in the same video, Adam 1e-4, batch 64.
RECIPES = {"wav2lip": {"batch_size": 64, "hard_negative_fraction": 1.0, "learning_rate": 1e-4, "loss": "bce"}}
# What a run writes into its folder: there, a new run would silently replace another's checkpoints.
RUN_FILES = ("last.keras", "best.keras", "state.json", "log.csv", "config.json", "backup", "tensorboard")


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str
    preset: str = "paper"
    epochs: int = hp.EPOCHS
    batch_size: int = hp.BATCH_SIZE
    learning_rate: float = hp.LEARNING_RATE
    loss: str = "bce"  # or "contrastive", "multiway"
    margin: float = hp.CONTRASTIVE_MARGIN
    group_size: int = data.OFFSET_GROUP  # multiway: windows of one segment compared all with all
    steps_per_epoch: int = 500
    val_fraction: float = 0.2
    val_speakers: list | None = None  # fixed validation speakers instead of a val_fraction draw
    val_steps: int = 100
    hard_negative_fraction: float = 0.25
    still_negative_fraction: float = 0.0  # negatives made of still mouths under their own audio (data.still_windows)
    speaker_balance: float = 0.0  # 0: windows as the footage has them; 1: every speaker group alike
    augment: bool = True
    seed: int = hp.SEED
    init_from: str | None = None
    freeze: str = "none"
    mixed_precision: bool = False
    jit_compile: bool = False
    resume: bool = False
    overwrite: bool = False  # replace the run already in out_dir (without it, such a run is refused)
    vshift: int = hp.VSHIFT


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


def choose_strategy() -> tf.distribute.Strategy:
    """Several workers (TF_CONFIG) -> MultiWorkerMirrored; several GPUs -> Mirrored; else default."""
    if "TF_CONFIG" in os.environ:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def freeze_layers(model: SyncNet, freeze: str):
    """`convs`: train only the fully-connected layers and the head (adapting the expert to a new
    domain on little data); `visual` / `audio`: keep that whole tower fixed; `none`: train all.
    (Our towers' layout: the other families train whole.)"""
    if freeze not in FREEZE_CHOICES:
        raise UserError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, got {freeze!r}")
    if freeze == "none":
        return
    if not isinstance(model, SyncNet):
        raise UserError(f"--freeze {freeze} freezes our towers' layers; a {model.family.name} expert trains whole (--freeze none)")
    towers = {"visual": [model.visual_tower], "audio": [model.audio_tower]}
    for tower in towers.get(freeze, []):
        tower.trainable = False
    if freeze == "convs":
        for tower in (model.visual_tower, model.audio_tower):
            for layer in tower.layers:
                if "_fc" not in layer.name and layer.weights:
                    layer.trainable = False


def compile_model(model: SyncNet, config: TrainConfig):
    if config.loss == "bce":
        loss = {"probability": keras.losses.BinaryCrossentropy()}
    elif config.loss == "contrastive":
        loss = {"distance": ContrastiveLoss(config.margin)}
    elif config.loss == "multiway":
        loss = {"distance": MultiwayLoss(), "probability": BalancedBinaryCrossentropy()}
    else:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss,
        metrics={
            "probability": [
                keras.metrics.BinaryAccuracy(name="accuracy"),
                keras.metrics.AUC(name="auc"),
            ]
        },
        jit_compile=config.jit_compile,
    )


def make_dataset(config: TrainConfig, shards, batch_size: int, seed: int, augment: bool):
    """The loss's batches of `batch_size` windows: groups of one segment's windows for `multiway`,
    pairs otherwise."""
    if config.loss == "multiway":
        return data.make_offset_dataset(
            shards,
            config.preset,
            batch_size // config.group_size,
            seed=seed,
            group_size=config.group_size,
            max_shift=config.vshift,
            augment=augment,
        )
    return data.make_pair_dataset(
        shards,
        config.preset,
        batch_size,
        seed=seed,
        hard_negative_fraction=config.hard_negative_fraction,
        augment=augment,
        still_negative_fraction=config.still_negative_fraction,
    )


def _labelled(dataset):
    """Keras wants the label keyed by the output the loss reads; metrics always read the probability."""

    def to_targets(inputs, label):
        return inputs, {"probability": label, "distance": label}

    return dataset.map(to_targets, num_parallel_calls=tf.data.AUTOTUNE)


# --- Callbacks -----------------------------------------------------------------------------------


def read_state(out_dir) -> dict:
    """Epochs completed and the best validation metric so far (state.json), for --resume."""
    path = os.path.join(out_dir, "state.json")
    if not os.path.exists(path):
        return {"epochs_done": 0, "best": -math.inf}
    with open(path) as f:
        return json.load(f)


def write_state(out_dir, state: dict):
    tmp = os.path.join(out_dir, ".state.json.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(out_dir, "state.json"))


class EpochEnd(keras.callbacks.Callback):
    """Offset accuracy, atomic last/best checkpoints and a plain log line, once per epoch.

    A non-finite loss stops the run before anything is written, so the last good checkpoint stays.
    """

    def __init__(self, config: TrainConfig, val_segments, chief: bool):
        super().__init__()
        self.config = config
        self.val_segments = val_segments
        self.chief = chief
        self.best = read_state(config.out_dir)["best"] if config.resume else -math.inf
        self.diverged = False

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.diverged = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged:
            return
        logs = logs if logs is not None else {}
        if self.val_segments is not None:
            accuracy = offset_accuracy(self.model, self.val_segments(), self.config.vshift)
            logs["val_offset_acc_1"] = accuracy[1]
            logs["val_offset_acc_15"] = accuracy[15]
        # The best checkpoint: highest offset accuracy (15-window averages) on validation - what an
        # expert is for - else the pair ROC-AUC.
        metric = logs.get("val_offset_acc_15", logs.get("val_probability_auc", logs.get("probability_auc", -math.inf)))
        if self.chief:
            out = self.config.out_dir
            save_model(self.model, os.path.join(out, "last.keras"))
            if metric > self.best:
                self.best = metric
                save_model(self.model, os.path.join(out, "best.keras"))
            write_state(out, {"epochs_done": epoch + 1, "best": self.best})
        line = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()) if isinstance(v, (int, float)))
        print(f"epoch {epoch + 1}/{self.config.epochs} {line}", file=sys.stderr, flush=True)


class _Callbacks(keras.callbacks.CallbackList):
    """The run's callbacks, each epoch's end - last/best checkpoints, state.json, Keras' backup, the
    CSV log - with Ctrl-C held back until all of it is written: interrupted halfway, Keras' backup
    was a weights file `--resume` could not load, and the files disagreed about the epoch."""

    def on_epoch_end(self, epoch, logs=None):
        with uninterrupted():
            super().on_epoch_end(epoch, logs)


# --- Entry point ---------------------------------------------------------------------------------


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> dict:
    """Train as configured; returns the last epoch's logs. Raises TrainingDiverged on NaN/Inf.

    strategy: a tf.distribute strategy of your own (a TPU's, some devices'); by default
    `choose_strategy()`. The batch size is per replica."""
    if config.loss == "multiway" and (config.group_size < 2 or config.batch_size % config.group_size):
        raise UserError(
            f"--loss multiway needs a --batch-size that is a multiple of --group-size (>= 2), "
            f"got {config.batch_size} and {config.group_size}"
        )
    if config.init_from is None and not data.holds_pixels(config.preset):
        vvadlrs3_weights_path()  # a new lips model needs vvadlrs3's encoder: say so before writing anything
    if config.resume and config.overwrite:
        raise UserError("--resume continues the run in --out, --overwrite replaces it: choose one")
    previous = [name for name in RUN_FILES if os.path.exists(os.path.join(config.out_dir, name))]
    if previous and not (config.resume or config.overwrite):
        raise UserError(f"{config.out_dir} holds a run ({', '.join(previous)}): --resume it, --overwrite it, or name another --out")
    os.makedirs(config.out_dir, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    shards = data.list_shards(config.data_dir)
    if not shards:
        raise UserError(f"no training shards in {config.data_dir} (run `syncnet preprocess` first)")
    train_shards, val_shards = data.split_by_speaker(config.data_dir, config.val_fraction, config.seed, config.val_speakers)
    if previous and config.overwrite:
        _remove_run(config.out_dir)  # only now that the data is there: a typo in DATA_DIR keeps the old run
    with open(os.path.join(config.out_dir, "config.json"), "w") as f:
        json.dump({**asdict(config), "train_shards": len(train_shards), "val_shards": len(val_shards)}, f, indent=1)

    strategy = strategy or choose_strategy()
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    with strategy.scope():
        model = load_model(config.init_from) if config.init_from else build_model(config.preset)
        model.calibration = None  # fitted for the initial weights, not for the ones training makes
        if config.init_from and model.preset != config.preset:
            config.preset = model.preset  # fine-tuning keeps the initial model's inputs
        freeze_layers(model, config.freeze)
        compile_model(model, config)

    balanced = data.balanced_shards(config.data_dir, train_shards, config.speaker_balance)
    train_ds = _labelled(make_dataset(config, balanced, global_batch, config.seed, config.augment))
    if config.resume:
        # The pair stream is deterministic under the seed: skip what finished epochs consumed, so a
        # resumed run sees the same batches as an uninterrupted one.
        train_ds = train_ds.skip(read_state(config.out_dir)["epochs_done"] * config.steps_per_epoch)
    val_ds, val_segments = None, None
    if val_shards:
        val_ds = _labelled(make_dataset(config, val_shards, global_batch, config.seed + 1, False))
        val_ds = val_ds.take(config.val_steps).cache()

        def val_segments():
            return data.eval_segments(val_shards, config.preset)

    chief = _is_chief()
    epoch_end = EpochEnd(config, val_segments, chief)
    verbose = 1 if sys.stderr.isatty() else 0
    callbacks = _Callbacks(
        [
            epoch_end,
            keras.callbacks.BackupAndRestore(os.path.join(config.out_dir, "backup"), delete_checkpoint=False),
            keras.callbacks.CSVLogger(os.path.join(config.out_dir, "log.csv"), append=config.resume),
            keras.callbacks.TensorBoard(os.path.join(config.out_dir, "tensorboard"), write_graph=False),
        ],
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=config.epochs,
        steps=config.steps_per_epoch,
    )
    if not config.resume:
        _clear_backup(config.out_dir)
    history = model.fit(
        train_ds,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # make_dataset shuffles; Keras would warn that it cannot shuffle a tf.data.Dataset
        validation_steps=config.val_steps if val_ds is not None else None,  # exactly what take() left: no "ran out of data"
    )
    if epoch_end.diverged:
        raise TrainingDiverged(
            f"loss became NaN/Inf; stopped. The last good checkpoint is {config.out_dir}/last.keras (try a lower --learning-rate)"
        )
    return {k: v[-1] for k, v in history.history.items()}


def _is_chief() -> bool:
    if "TF_CONFIG" not in os.environ:
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0)


def _clear_backup(out_dir):
    shutil.rmtree(os.path.join(out_dir, "backup"), ignore_errors=True)


def _remove_run(out_dir):
    """Delete what a run wrote (RUN_FILES), nothing else of the folder."""
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def configure_parser(parser):
    parser.add_argument("data_dir", help="folder of shards made by `syncnet preprocess`")
    parser.add_argument("--out", required=True, dest="out_dir", help="run folder (checkpoints, logs)")
    parser.add_argument(
        "--preset",
        default="paper",
        choices=tuple(PRESETS),
        help=f"the shards' preset (syncnet preprocess --preset); lips builds on vvadlrs3's lip encoder ({VVADLRS3_INSTALL})",
    )
    parser.add_argument("--epochs", type=int, default=hp.EPOCHS)
    parser.add_argument("--steps-per-epoch", type=int, default=TrainConfig.steps_per_epoch)
    parser.add_argument("--batch-size", type=int, default=None, help=f"per replica (default {hp.BATCH_SIZE}; the wav2lip presets: 64)")
    parser.add_argument("--learning-rate", type=float, default=None, help=f"(default {hp.LEARNING_RATE})")
    parser.add_argument(
        "--loss",
        default=None,
        choices=LOSSES,
        help="bce: pairs (default); contrastive: the paper's margin loss on pairs; "
        "multiway: groups of a clip's windows, each against every audio window "
        "of its group (Perfect Match)",
    )
    parser.add_argument("--margin", type=float, default=hp.CONTRASTIVE_MARGIN)
    parser.add_argument(
        "--group-size", type=int, default=TrainConfig.group_size, help="multiway: windows per group (--batch-size counts windows)"
    )
    parser.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction)
    parser.add_argument("--val-steps", type=int, default=TrainConfig.val_steps, help="validation batches per epoch (a fixed, seeded set)")
    parser.add_argument(
        "--val-speakers",
        type=lambda text: [name for name in text.split(",") if name],
        help="comma-separated speaker ids to validate on (with everyone who shares a clip "
        "with them), instead of a --val-fraction drawn by --seed",
    )
    parser.add_argument(
        "--hard-negatives",
        type=float,
        default=None,
        dest="hard_negative_fraction",
        help=f"fraction of negatives from the same clip, shifted (default {TrainConfig.hard_negative_fraction}; the wav2lip presets: 1)",
    )
    parser.add_argument(
        "--still-negatives",
        type=float,
        default=None,
        dest="still_negative_fraction",
        help="fraction of negatives made of mouths that do not speak (frozen, flat, textured) under their own audio: "
        "an expert that rates them out of sync cannot be gamed that way as a sync loss (default 0)",
    )
    parser.add_argument(
        "--speaker-balance",
        type=float,
        default=TrainConfig.speaker_balance,
        help="0..1: a speaker's share of the training windows goes as its frames to the power "
        "1 - this (0: as the footage has them; 1: every speaker alike)",
    )
    parser.add_argument("--no-augment", action="store_false", dest="augment")
    parser.add_argument("--seed", type=int, default=hp.SEED)
    parser.add_argument("--init-from", help="start from this model (.keras or 'default')")
    parser.add_argument("--freeze", default="none", choices=FREEZE_CHOICES)
    parser.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU)")
    parser.add_argument("--xla", action="store_true", dest="jit_compile", help="XLA-compile the train step")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its checkpoints and logs)")


def run_command(args) -> int:
    options = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    recipe = RECIPES.get(data.family_of(args.preset).name, {})
    config = TrainConfig(**{**recipe, **options})
    if config.resume and not os.path.isdir(os.path.join(config.out_dir, "backup")):
        raise UserError(f"nothing to resume in {config.out_dir}")
    try:
        logs = train(config)
    except TrainingDiverged as error:
        print(f"syncnet train: {error}", file=sys.stderr)
        return 1
    print(json.dumps({k: round(float(v), 4) for k, v in logs.items()}))
    return 0
