"""Throughput and peak memory of `syncnet preprocess` with 1 and 2 workers, and the pair pipeline's speed.

    python bench/bench_preprocess.py [--clips N] [--seconds S] [--size 224] [--videos DIR] [--preset paper]

Without --videos it writes N synthetic talking-head clips (tests/synthetic.py) of S seconds. Wall time
includes starting the worker processes (each imports TensorFlow and loads dlib once), so few short
clips understate what many long ones get. "In the workers" adds up the seconds each video took
inside its worker (the steady-state cost); CPU ms a frame is what a busy shared machine distorts least.
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic import write_clip  # noqa: E402

from syncnet import data  # noqa: E402
from syncnet.data import read_manifest  # noqa: E402
from syncnet.preprocess import preprocess_folder  # noqa: E402


def cpu_seconds():
    """CPU time of this process and of its finished children (the workers, once the pool is shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_preprocess(videos, workers, preset):
    out = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    began, cpu_began = time.perf_counter(), cpu_seconds()
    summary = preprocess_folder(videos, out, preset, workers=workers, progress=False)
    wall, cpu = time.perf_counter() - began, cpu_seconds() - cpu_began
    entries = list(read_manifest(out).values())
    frames = sum(entry["frames"] for entry in entries)
    busy = sum(entry.get("seconds", 0.0) for entry in entries)
    print(
        f"workers={workers}: {len(entries)} clips, {frames} frames in {wall:.1f} s wall -> "
        f"{len(entries) / wall:.3f} clips/s, {frames / wall:.1f} frames/s; "
        f"in the workers {busy:.1f} s ({frames / busy:.1f} frames/s each); CPU {1000 * cpu / frames:.0f} ms a frame "
        f"(worker start-up included); {summary['segments']} segments, "
        f"{sum(p.stat().st_size for p in out.glob('shard-*')) / 1e6:.1f} MB; peak RSS {peak_rss_mb(workers):.0f} MB",
        flush=True,
    )
    return out


def peak_rss_mb(workers):
    """The high-water resident memory of the process that did the work: this one for 1 worker (no
    pool), else the largest worker. Bounded memory means it does not grow with the videos' length."""
    who = resource.RUSAGE_SELF if workers <= 1 else resource.RUSAGE_CHILDREN
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KB


def bench_pairs(shards, preset, seconds=10.0, batch_size=64):
    for augment in (False, True):
        iterator = iter(data.make_pair_dataset(shards, preset, batch_size=batch_size, augment=augment))
        next(iterator)  # fills the shuffle buffer
        pairs, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            next(iterator)
            pairs += batch_size
        print(f"pairs (augment={augment}): {pairs / (time.perf_counter() - began):.0f} pairs/s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=224, help="synthetic frame size (px, square)")
    parser.add_argument("--videos", help="a folder of real videos instead of synthetic ones")
    parser.add_argument("--preset", default="paper")
    args = parser.parse_args()

    videos = Path(args.videos) if args.videos else Path(tempfile.mkdtemp(prefix="bench_clips_"))
    if not args.videos:
        for seed in range(args.clips):
            write_clip(videos / f"clip_{seed}.mp4", seconds=args.seconds, size=(args.size, args.size), seed=seed)
    print(f"{os.cpu_count()} CPUs, preset {args.preset}, videos in {videos}", flush=True)
    outputs = [bench_preprocess(videos, workers, args.preset) for workers in (1, 2)]
    bench_pairs(data.list_shards(outputs[0]), args.preset)
    for folder in outputs + ([] if args.videos else [videos]):
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
