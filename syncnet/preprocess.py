"""Turning raw talking-head videos into training shards: face tracks, crops and audio features.

    syncnet preprocess INPUT_DIR OUTPUT_DIR [--preset paper|syncnet_v2|wav2lip|...] [--workers N] [--manifest TSV]
                       [--min-confidence X --model M [--max-offset K]] [--runner local|beam [--beam-args="..."]]

Per video (`preprocess_video`): decode at 25 fps, follow every face (syncnet.faces), crop it as the
preset's family's model sees it (112 px grayscale mouths for `paper`/`tiny`, 224 px RGB faces for
`syncnet_v2`, the lower halves of 96 px RGB faces for the `wav2lip` presets; for `lips`, 50 x 100
RGB lip crops stored as their frozen frame encoder's features, computed once here so training never
runs the encoder) and cut the clip's audio features (the family's: MFCC, or Wav2Lip's mel) to each track.
Tracks are split into segments of at most MAX_SEGMENT_FRAMES frames, one tf.train.Example each
(format: syncnet/data.py).

OUTPUT_DIR gets one shard per video, `shard-00000.tfrecord.gz`, ..., written under a temporary name
and renamed, so a shard is never half-written; `manifest.jsonl`, one line per video as it finishes
(status ok / skipped / error, why, counts, its shard); `summary.json`. A rerun skips the videos the
manifest already has as ok or skipped and retries the errors, so an interrupted run resumes.

- skipped: the video cannot give training data - unreadable, no audio track, silent, too short, no
  face track of 5+ frames, or every segment failed the confidence filter. Retrying would not help.
- error: anything else (a bug, a crashed worker); the reason is logged and the rest goes on.

Speakers (for the speaker-disjoint split in syncnet.data): a `--manifest` TSV's `speakers` column
(columns `file` and `speakers`, as ../shared/data/MANIFEST.tsv has them); otherwise the folder a
video is in (VidTIMIT: the folder above `video/`); a video directly in INPUT_DIR is its own speaker.
"""

import argparse
import concurrent.futures
import csv
import functools
import json
import math
import multiprocessing
import os
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from . import hyperparameters as hp
from .data import COMPRESSION, MANIFEST, Segment, crop_shape, encode_segment, family_of, holds_pixels, read_manifest
from .embedding import audio_features, compiled_towers, segment_embeddings
from .errors import UserError, install_hint, one_line
from .faces import crop_tracks, find_face_tracks, frames_to_crop
from .files import atomic_output
from .loading import load_model
from .models import PRESETS, build_model
from .models.lip_encoder import VVADLRS3_INSTALL, vvadlrs3_weights_path
from .models.towers import lip_feature_codes
from .offsets import IN_SYNC_MAX_OFFSET, score_windows, search_offset
from .video import VIDEO_SUFFIXES, Media, MediaError, is_frame_folder, is_silent, load_media

MAX_SEGMENT_FRAMES = 250  # 10 s: longer tracks are split evenly, so no example gets huge
SHARD_NAME = "shard-{:05d}.tfrecord.gz"
SUMMARY = "summary.json"


# --- One video -------------------------------------------------------------------------------------


@dataclass
class VideoRecord:
    """A video's face tracks and audio features (the preset's family's), ready to be cut into segments.

    `segments()` decodes the video again and yields the segments while it crops, so only the
    segments being filled (at most MAX_SEGMENT_FRAMES frames per track) are in memory.
    """

    media: Media = field(repr=False)
    preset: str
    clip: str
    speaker: str
    tracks: list  # syncnet.faces.FaceTrack, within the frames with audio under them
    skipped_frames: dict  # frames without a track, by reason (syncnet.faces.TrackingResult.skipped)
    audio: np.ndarray = field(repr=False)  # (features, steps to the end of the last frame's window) float32

    @property
    def num_frames(self) -> int:
        return self.media.num_frames

    def segments(self) -> Iterator[Segment]:
        bounds = {track.track_id: segment_bounds(track.start, track.end) for track in self.tracks}
        filling = {track_id: [] for track_id in bounds}
        shape = crop_shape(self.preset)
        family = family_of(self.preset)
        encode = feature_encoder(self.preset)
        for frame_index, crops in crop_tracks(frames_to_crop(self.media, family.crop), self.tracks, family.crop):
            for track_id, crop in crops.items():
                filling[track_id].append(crop)
                start, stop = bounds[track_id][0]
                if frame_index + 1 == stop:
                    bounds[track_id].pop(0)
                    first = family.audio_window_start(start)
                    steps = slice(first, family.audio_window_start(stop - 1) + family.audio_window_steps)
                    track_crops = np.stack(filling[track_id])
                    stored = track_crops.reshape(len(track_crops), *shape) if encode is None else encode(track_crops)
                    yield Segment(self.clip, self.speaker, track_id, start, stored, self.audio[:, steps])
                    filling[track_id] = []


ENCODER_BATCH = 128  # crops per frame-encoder call


@functools.cache  # once per worker process
def feature_encoder(preset: str):
    """For a preset whose shards hold frame-encoder features (`lips`): the function from (n, H, W, C)
    uint8 crops to their (n, 3, 6, 512) uint8 feature codes, with vvadlrs3's weights; else None."""
    if holds_pixels(preset):
        return None
    # the encoder a new model of the preset starts from (build_model loads vvadlrs3's weights),
    # compiled as scoring compiles it
    encode_frames = compiled_towers(build_model(preset)).encode_frames

    def encode(crops: np.ndarray) -> np.ndarray:
        batches = range(0, len(crops), ENCODER_BATCH)
        features = [encode_frames(crops[i : i + ENCODER_BATCH].astype(np.float32)).numpy() for i in batches]
        return lip_feature_codes(np.concatenate(features))

    return encode


def segment_bounds(start: int, end: int, max_frames: int = MAX_SEGMENT_FRAMES) -> list[tuple[int, int]]:
    """Frames start..end split into the fewest near-equal (start, stop) pieces of at most max_frames."""
    pieces = math.ceil((end - start) / max_frames)
    cuts = [start + k * (end - start) // pieces for k in range(pieces + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def preprocess_video(path, preset: str = "paper", audio_path=None, *, clip: str | None = None, speaker: str | None = None) -> VideoRecord:
    """Decode a video, find its face tracks and compute its audio features; raises MediaError when the video
    cannot give training data (unreadable, no or silent audio, too short, no face track).

    clip, speaker: ids stored with its segments (default: the file's stem, its folder's name).
    """
    family = family_of(preset)  # a bad preset fails before the decoding
    path = Path(path)
    media = load_media(path, audio_path)
    if is_silent(media.audio):
        raise MediaError(f"{path}: the audio is silent")
    # Frames whose 1/25 s of audio is all there; past them a window would pair lips with padding.
    usable_frames = min(media.num_frames, len(media.audio) // hp.SAMPLES_PER_FRAME)
    window = family.window_frames
    if usable_frames < window:
        raise MediaError(f"{path}: only {usable_frames} frames with audio; need at least {window}")

    tracking = find_face_tracks(media.frames(0, usable_frames, gray=True))
    tracks = [track for track in tracking.tracks if track.end - track.start >= window]
    if not tracks:
        frames_without = ", ".join(f"{reason} {count}" for reason, count in sorted(tracking.skipped.items()))
        raise MediaError(f"{path}: no face track of {window}+ frames (frames without one: {frames_without})")

    # Every frame's whole window, the last ones over zero padding where the audio stops short: one
    # more window of silence past the last frame covers any front-end's tail.
    steps = family.audio_window_start(usable_frames - 1) + family.audio_window_steps
    audio = np.zeros(usable_frames * hp.SAMPLES_PER_FRAME + hp.AUDIO_SAMPLE_RATE * steps // family.front_end.rate, np.float32)
    audio[: min(len(media.audio), len(audio))] = media.audio[: len(audio)]
    features = audio_features(family, audio)[:, :steps]

    return VideoRecord(
        media=media,
        preset=preset,
        clip=clip or path.stem,
        speaker=speaker or path.parent.name,
        tracks=tracks,
        skipped_frames=tracking.skipped,
        audio=features,
    )


# --- The confidence filter -------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncFilter:
    """Keep a segment when model `model` finds it in sync: LSE-C >= min_confidence, |offset| <= max_offset."""

    model: str
    min_confidence: float
    max_offset: int

    def keeps(self, segment: Segment) -> bool:
        model = _load_filter_model(self.model)
        if model.feature_shape[1:] != segment.crops.shape[1:]:
            raise UserError(
                f"--model {self.model} reads {model.feature_shape[1:]} per frame, the preset's shards hold {segment.crops.shape[1:]}"
            )
        frame_embeddings, audio_embeddings = segment_embeddings(model, segment.crops, segment.audio, segment.start)
        vshift = min(hp.VSHIFT, len(frame_embeddings) - 1)
        if vshift < 1:
            return False  # too short to tell an offset
        search = search_offset(score_windows(frame_embeddings, audio_embeddings, vshift, model.family.comparison))
        return search.confidence >= self.min_confidence and abs(search.offset) <= self.max_offset


_load_filter_model = functools.cache(load_model)  # once per worker process


# --- Shards ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One video to preprocess into output_dir/shard; what a worker process gets."""

    video: str  # its path relative to the input folder: its key in the manifest
    path: str
    audio_path: str | None
    clip: str
    speaker: str
    shard: str
    preset: str
    output_dir: str
    sync_filter: SyncFilter | None = None


def process_job(job: Job) -> dict:
    """Preprocess one video into its shard; returns its manifest line. Never raises for a bad video."""
    began = time.monotonic()
    entry = {
        "video": job.video,
        "clip": job.clip,
        "speaker": job.speaker,
        "preset": job.preset,
        "status": "ok",
        "reason": None,
        "frames": 0,
        "tracks": 0,
        "segments": 0,
        "track_frames": 0,
        "filtered": 0,
        "shard": None,
    }
    final = os.path.join(job.output_dir, job.shard)
    temporary = os.path.join(job.output_dir, f".{job.shard}.tmp")
    try:
        record = preprocess_video(job.path, job.preset, job.audio_path, clip=job.clip, speaker=job.speaker)
        entry.update(frames=record.num_frames, tracks=len(record.tracks), skipped_frames=record.skipped_frames)
        with tf.io.TFRecordWriter(temporary, options=COMPRESSION) as writer:
            for segment in record.segments():
                if job.sync_filter is not None and not job.sync_filter.keeps(segment):
                    entry["filtered"] += 1
                    continue
                writer.write(encode_segment(segment, job.preset))
                entry["segments"] += 1
                entry["track_frames"] += segment.num_frames
        if entry["segments"]:
            tf.io.gfile.rename(temporary, final, overwrite=True)
            entry["shard"] = job.shard
        else:
            entry.update(status="skipped", reason=f"all {entry['filtered']} segments below the sync filter")
    except MediaError as error:
        entry.update(status="skipped", reason=_reason(error, job.path))
    except Exception as error:  # a bad video must not stop the other thousands
        entry.update(status="error", reason=f"{type(error).__name__}: {_reason(error, job.path)}")
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
    entry["seconds"] = round(time.monotonic() - began, 2)
    return entry


def _reason(error: BaseException, path) -> str:
    """The error's first line without the leading 'PATH: ' (the manifest line names the video)."""
    return one_line(error).removeprefix(f"{path}: ")


# --- A folder --------------------------------------------------------------------------------------


def find_inputs(input_dir) -> list[tuple[Path, Path | None]]:
    """(video, separate audio or None) for every video file under input_dir and every VidTIMIT-style
    folder of numbered JPEG frames (its audio: the folder's one .wav, or VidTIMIT's
    SPEAKER/audio/SEQUENCE.wav beside SPEAKER/video/SEQUENCE/), sorted."""
    input_dir = Path(input_dir)
    if input_dir.is_file():
        return [(input_dir, None)]
    if not input_dir.is_dir():
        raise FileNotFoundError(f"no such folder: {input_dir}")
    found = []
    for folder, subfolders, files in os.walk(input_dir):
        folder = Path(folder)
        subfolders.sort()
        if folder != input_dir and is_frame_folder(folder):
            subfolders.clear()  # a frame folder is one video
            wavs = sorted(folder.glob("*.wav"))
            vidtimit_audio = folder.parent.parent / "audio" / f"{folder.name}.wav"
            audio = wavs[0] if len(wavs) == 1 else vidtimit_audio if vidtimit_audio.is_file() else None
            found.append((folder, audio))
            continue
        found += [(folder / name, None) for name in files if Path(name).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found)


def read_speakers(tsv) -> dict[str, str]:
    """file name -> speakers, from a TSV with columns `file` and `speakers`."""
    with open(tsv, newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        if not {"file", "speakers"} <= set(rows.fieldnames or ()):
            raise UserError(f"{tsv}: needs tab-separated columns 'file' and 'speakers', has {rows.fieldnames}")
        return {Path(row["file"]).name: row["speakers"] for row in rows if row["speakers"]}


def plan_jobs(input_dir, output_dir, preset="paper", speakers=None, sync_filter=None) -> list[Job]:
    """The videos under input_dir that output_dir does not have yet (status ok or skipped), each with
    a new shard number. Also removes what an interrupted run left: temporary files and shards that no
    manifest line claims."""
    crop_shape(preset)
    if not holds_pixels(preset):
        vvadlrs3_weights_path()  # the features need the encoder's weights: say how to get them now
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    done = read_manifest(output_dir)
    other_presets = {entry["preset"] for entry in done.values() if entry["status"] == "ok"} - {preset}
    if other_presets:
        raise UserError(f"{output_dir} holds shards for preset {other_presets.pop()!r}; use another folder for {preset!r}")
    claimed = {entry["shard"] for entry in done.values() if entry["status"] == "ok"}
    for leftover in [*output_dir.glob(".shard-*.tmp"), *output_dir.glob("shard-*.tfrecord.gz")]:
        if leftover.name not in claimed:
            leftover.unlink()
    numbers = [int(re.search(r"\d+", entry["shard"]).group()) for entry in done.values() if entry.get("shard")]
    next_number = max(numbers, default=-1) + 1

    jobs = []
    root = input_dir if input_dir.is_dir() else input_dir.parent
    for path, audio_path in find_inputs(input_dir):
        video = path.relative_to(root).as_posix()
        if done.get(video, {}).get("status") in ("ok", "skipped"):
            continue
        clip = str(Path(video).with_suffix("")) if path.is_file() else video
        in_vidtimit_layout = path.is_dir() and path.parent.name == "video"
        folder = path.parent.parent if in_vidtimit_layout else path.parent
        speaker = (speakers or {}).get(path.name) or (folder.name if folder != root else clip)
        jobs.append(
            Job(
                video,
                str(path),
                None if audio_path is None else str(audio_path),
                clip,
                speaker,
                SHARD_NAME.format(next_number),
                preset,
                str(output_dir),
                sync_filter,
            )
        )
        next_number += 1
    return jobs


def run_local(jobs: list[Job], output_dir, workers: int = 1, progress: bool = True) -> list[dict]:
    """Process the jobs, `workers` at a time in spawned processes (1: in this process), appending each
    manifest line as its video finishes."""
    entries = []
    bar = tqdm(total=len(jobs), unit="video", desc="preprocess", disable=not progress, file=sys.stderr)
    with open(Path(output_dir) / MANIFEST, "a") as manifest:

        def record(entry):
            manifest.write(json.dumps(entry) + "\n")
            manifest.flush()
            os.fsync(manifest.fileno())
            entries.append(entry)
            bar.update()
            bar.set_postfix(Counter(e["status"] for e in entries))

        if workers <= 1:
            for job in jobs:
                record(process_job(job))
        else:
            # spawn: TensorFlow's threads do not survive fork. Each worker keeps its dlib models and
            # TensorFlow between videos.
            context = multiprocessing.get_context("spawn")
            executor = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread_each)
            try:
                futures = {executor.submit(process_job, job): job for job in jobs}
                for future in concurrent.futures.as_completed(futures):
                    try:
                        record(future.result())
                    except concurrent.futures.process.BrokenProcessPool:
                        job = futures[future]
                        record(
                            {
                                "video": job.video,
                                "clip": job.clip,
                                "speaker": job.speaker,
                                "preset": job.preset,
                                "status": "error",
                                "reason": "a worker process died (out of memory or a crash in a decoder)",
                            }
                        )
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return entries


def _one_thread_each():
    """A worker's TensorFlow computes one small MFCC per video: let the processes, not threads, share the cores."""
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def run_beam_pipeline(inputs: list[Job], output_dir, preset: str = "paper", pipeline_args=()) -> list[dict]:
    """The same work as an Apache Beam pipeline (`pip install apache-beam`): each job is one element,
    so a runner spreads them over its workers. Paths must be readable from every worker; the shards
    go through tf.io.gfile, so output_dir may be a gs:// bucket. Returns the manifest lines, which the
    caller appends to the manifest."""
    try:
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError as error:
        raise UserError(f"--runner beam needs Apache Beam: {install_hint('beam', 'apache-beam')}") from error

    if any(job.preset != preset for job in inputs):
        raise UserError(f"every job must be for preset {preset!r}")
    prefix = os.path.join(os.fspath(output_dir), ".beam-manifest")
    with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
        _ = (
            pipeline
            | "Videos" >> beam.Create(inputs)
            | "Spread" >> beam.Reshuffle()
            | "Preprocess" >> beam.Map(process_job)
            | "Lines" >> beam.Map(json.dumps)
            | "Manifest" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
        )
    entries = []
    for part in sorted(tf.io.gfile.glob(prefix + "*")):
        with tf.io.gfile.GFile(part) as lines:
            entries += [json.loads(line) for line in lines if line.strip()]
        tf.io.gfile.remove(part)
    return entries


def write_summary(output_dir) -> dict:
    """summary.json from the whole manifest: counts, frames, why videos were skipped or failed."""
    entries = list(read_manifest(output_dir).values())
    ok = [entry for entry in entries if entry["status"] == "ok"]
    summary = {
        "preset": ok[0]["preset"] if ok else None,
        "videos": dict(Counter(entry["status"] for entry in entries)),
        "shards": len(ok),
        "tracks": sum(entry["tracks"] for entry in ok),
        "segments": sum(entry["segments"] for entry in ok),
        "track_frames": sum(entry["track_frames"] for entry in ok),
        "speakers": len({entry["speaker"] for entry in ok}),
        "filtered_segments": sum(entry.get("filtered", 0) for entry in entries),
        "skipped": dict(Counter(_reason_kind(entry["reason"]) for entry in entries if entry["status"] == "skipped").most_common()),
        "errors": {entry["video"]: entry["reason"] for entry in entries if entry["status"] == "error"},
    }
    with atomic_output(Path(output_dir) / SUMMARY) as temporary:
        Path(temporary).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _reason_kind(reason: str) -> str:
    """A skip reason without its numbers and details, to count like reasons together."""
    return re.sub(r"\s*\(.*", "", re.sub(r"\d+(\.\d+)?", "N", reason or "")).strip()


def preprocess_folder(
    input_dir, output_dir, preset="paper", *, workers=1, speakers=None, sync_filter=None, runner="local", beam_args=(), progress=True
) -> dict:
    """Preprocess every video under input_dir that output_dir lacks; returns the summary."""
    jobs = plan_jobs(input_dir, output_dir, preset, speakers, sync_filter)  # checks the inputs before writing anything
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    if runner == "beam":
        with open(Path(output_dir) / MANIFEST, "a") as manifest:
            manifest.writelines(json.dumps(entry) + "\n" for entry in run_beam_pipeline(jobs, output_dir, preset, beam_args))
    elif runner == "local":
        run_local(jobs, output_dir, workers, progress)
    else:
        raise UserError(f"--runner must be 'local' or 'beam', got {runner!r}")
    summary = write_summary(output_dir)
    summary["new_videos"] = len(jobs)
    return summary


# --- Command line ----------------------------------------------------------------------------------


def configure_parser(parser):
    parser.add_argument("input_dir", help="folder searched recursively for videos (and VidTIMIT frame folders)")
    parser.add_argument("output_dir", help="folder for the shards, manifest.jsonl and summary.json")
    parser.add_argument(
        "--preset",
        default="paper",
        choices=tuple(PRESETS),
        help="whose crops and audio features: paper/tiny 112 px grayscale mouths, syncnet_v2 224 px RGB faces, "
        "wav2lip* lower halves of 96 px RGB faces with Wav2Lip's mel, lips vvadlrs3's features of 50 x 100 RGB lip crops (needs: "
        f"{VVADLRS3_INSTALL})",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="videos processed at once, each in its own process (default: one per CPU)"
    )
    parser.add_argument("--manifest", help="TSV with columns 'file' and 'speakers' giving each video's speaker id(s)")
    parser.add_argument(
        "--min-confidence", type=float, help="keep only segments a model finds in sync with at least this LSE-C (needs --model)"
    )
    parser.add_argument("--model", help="the model for --min-confidence (.keras file or 'default')")
    parser.add_argument(
        "--max-offset",
        type=int,
        default=IN_SYNC_MAX_OFFSET,
        help="with --min-confidence: also drop segments whose offset is further off (frames)",
    )
    parser.add_argument(
        "--runner",
        default="local",
        choices=("local", "beam"),
        help="beam: run as an Apache Beam pipeline (needs apache-beam: the beam extra)",
    )
    parser.add_argument(
        "--beam-args",
        default="",
        type=shlex.split,
        help='pipeline options for --runner beam, in one string after "=": --beam-args="--runner=DataflowRunner --project=P --region=R"',
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the progress bar on stderr (default: when stderr is a terminal, so redirected logs stay clean)",
    )


def run_command(args) -> int:
    if (args.min_confidence is None) != (args.model is None):
        raise UserError("--min-confidence and --model go together")
    if args.beam_args and args.runner != "beam":
        raise UserError("--beam-args is for --runner beam")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    sync_filter = None if args.model is None else SyncFilter(args.model, args.min_confidence, args.max_offset)
    speakers = read_speakers(args.manifest) if args.manifest else None
    began = time.monotonic()
    summary = preprocess_folder(
        args.input_dir,
        args.output_dir,
        args.preset,
        workers=args.workers,
        speakers=speakers,
        sync_filter=sync_filter,
        runner=args.runner,
        beam_args=args.beam_args,
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    print(summary_text(summary, args.output_dir, time.monotonic() - began))
    return 0 if not summary["errors"] else 1


def summary_text(summary: dict, output_dir, seconds: float) -> str:
    videos = summary["videos"]
    lines = [
        f"{summary['new_videos']} videos processed in {seconds:.0f} s; {output_dir} now has "
        f"{videos.get('ok', 0)} ok, {videos.get('skipped', 0)} skipped, {videos.get('error', 0)} failed: "
        f"{summary['segments']} segments ({summary['track_frames']} frames) from {summary['tracks']} face tracks, "
        f"{summary['speakers']} speakers"
    ]
    lines += [f"  skipped {count}: {reason}" for reason, count in summary["skipped"].items()]
    lines += [f"  failed: {video}: {reason}" for video, reason in summary["errors"].items()]
    if summary["filtered_segments"]:
        lines.append(f"  {summary['filtered_segments']} segments dropped by the sync filter")
    return "\n".join(lines)
