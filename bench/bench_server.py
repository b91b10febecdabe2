"""`syncnet serve` under load: rounds of N concurrent uploads against a real server process.

    python bench/bench_server.py [--model tiny.keras] [--clients 12] [--rounds 4] [--queue 4]

Every upload must be answered, 200 (scored) or 429 (queue full), with no timeouts or dropped
connections, and the server's resident memory (sampled from /proc every 0.2 s) must level off: the
peak of the last round may not exceed the first round's by more than --rss-growth-mb. Prints the
answers, latencies and memory per round; exits 1 when a check fails.

Without --model it serves an untrained `paper`-preset SyncNet: the scores mean nothing, but it costs
what the real one costs to run.
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
from synthetic import write_clip  # noqa: E402
from test_server import post_files, running_server  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class MemorySampler:
    """Samples a process's RSS every `interval` s in a thread; `mark()` starts a new round."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.rounds = [[]]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.wait(self.interval):
            self.rounds[-1].append(rss_mb(self.pid))

    def mark(self):
        self.rounds.append([])

    def stop(self):
        self.stopped.set()
        self.thread.join()


def upload(url, clip: Path) -> tuple:
    began = time.perf_counter()
    try:
        status, _ = post_files(f"{url}/v1/score", {"video": (clip.name, clip.read_bytes())}, timeout=600)
    except OSError as error:  # refused, reset, timed out: not an answer
        return f"no answer ({type(error).__name__})", time.perf_counter() - began
    return status, time.perf_counter() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras SyncNet (default: an untrained paper-preset one)")
    parser.add_argument("--clients", type=int, default=12, help="concurrent uploads per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--queue", type=int, default=4, help="the server's --queue")
    parser.add_argument("--rss-growth-mb", type=float, default=150.0, help="allowed growth of the peak RSS, first to last round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_server_") as folder:
        folder = Path(folder)
        model = args.model
        if model is None:
            from syncnet.loading import save_model
            from syncnet.models import build_model

            model = folder / "paper_untrained.keras"
            save_model(build_model("paper"), model)
        clips = [folder / "small.mp4", folder / "wide.mp4"]
        write_clip(clips[0], seconds=3, seed=1)
        write_clip(clips[1], seconds=4, size=(640, 360), faces=(True, False), seed=2)
        print(f"clips: {', '.join(f'{clip.name} {clip.stat().st_size / 1e3:.0f} KB' for clip in clips)}")

        server_tmp = folder / "server_tmp"
        server_tmp.mkdir()
        with running_server(model, server_tmp, "--queue", str(args.queue)) as (url, process):
            sampler = MemorySampler(process.pid)
            print(
                f"server RSS after start-up: {rss_mb(process.pid):.0f} MB; {args.clients} concurrent uploads a round, --queue {args.queue}"
            )
            peaks, failures = [], []
            for round_index in range(args.rounds):
                began = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    answers = list(pool.map(lambda i: upload(url, clips[i % len(clips)]), range(args.clients)))
                wall = time.perf_counter() - began
                statuses = Counter(status for status, _ in answers)
                scored = sorted(seconds for status, seconds in answers if status == 200)
                samples = sampler.rounds[-1] or [rss_mb(process.pid)]
                peaks.append(max(samples))
                unexpected = {status: count for status, count in statuses.items() if status not in (200, 429)}
                if unexpected:
                    failures.append(f"round {round_index + 1}: {unexpected}")
                latency = f"{np.median(scored):.1f} s median, {max(scored):.1f} s max" if scored else "-"
                print(
                    f"round {round_index + 1}: {dict(statuses)} in {wall:.1f} s; 200s answered in {latency}; "
                    f"RSS {min(samples):.0f}-{max(samples):.0f} MB"
                )
                sampler.mark()
            sampler.stop()
            leftovers = list(server_tmp.glob("syncnet-serve-*/*"))
        growth = peaks[-1] - peaks[0]
        print(
            f"peak RSS first round {peaks[0]:.0f} MB, last round {peaks[-1]:.0f} MB (growth {growth:+.0f} MB); "
            f"upload files left behind: {len(leftovers)}"
        )
        if growth > args.rss_growth_mb:
            failures.append(f"RSS grew by {growth:.0f} MB (> {args.rss_growth_mb:g})")
        if leftovers:
            failures.append(f"{len(leftovers)} upload files left in the server's folder")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
