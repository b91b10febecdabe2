"""A cold `syncnet` command, process start to exit, and where its seconds go.

    python bench/bench_cli_start.py [--clip GLOB] [--repeats 3]

Each command runs in a fresh process, `--repeats` times (the best counts), next to `python -c pass`
(the interpreter's own start) measured the same way: `syncnet --help`, `syncnet score` of a missing
file (must not import TensorFlow), and `syncnet score` of a 10 s clip. Then, in this process, the
parts of a cold score: importing TensorFlow, loading the shipped model, loading dlib's models, the
first score_video (tracing) and a second one (warm).
"""

import argparse
import os
import subprocess
import sys
import time

from clips import find_clip


def best_wall_time(command: list, repeats: int) -> float:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, env=environment)
        times.append(time.perf_counter() - start)
    return min(times)


def timed(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="*PC-AVS__misc_Input_00098.mp4", help="glob under ../shared/data/clips, or a path")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    clip = find_clip(args.clip)
    syncnet = [sys.executable, "-m", "syncnet.cli"]
    baseline = best_wall_time([sys.executable, "-c", "pass"], args.repeats)
    print(f"python -c pass: {baseline:.2f} s")
    for label, command in [
        ("syncnet --help", [*syncnet, "--help"]),
        ("syncnet score missing.mp4", [*syncnet, "score", "missing.mp4"]),
        (f"syncnet score {clip.name}", [*syncnet, "score", str(clip)]),
    ]:
        seconds = best_wall_time(command, args.repeats)
        print(f"{label}: {seconds:.2f} s ({seconds / baseline:.1f}x python's start)")

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    print("a cold score's parts, in this process:")
    print(f"  import tensorflow: {timed(lambda: __import__('tensorflow')):.2f} s")
    from syncnet import load_model, score_video
    from syncnet.faces import find_face_tracks

    holder = {}
    print(f"  load_model(): {timed(lambda: holder.setdefault('model', load_model())):.2f} s")
    import numpy as np

    print(f"  dlib's models: {timed(lambda: find_face_tracks([np.zeros((64, 64), np.uint8)] * 5)):.2f} s")
    print(f"  first score_video (traces the towers, MFCC, head): {timed(lambda: score_video(clip, holder['model'])):.2f} s")
    print(f"  second score_video (warm): {timed(lambda: score_video(clip, holder['model'])):.2f} s")


if __name__ == "__main__":
    main()
