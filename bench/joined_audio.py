"""A clip joined to itself with stream copy, as `ffmpeg -stream_loop N -i clip -c copy` joins it:
does the audio stay in place?

    python bench/joined_audio.py [--clip GLOB] [--loops 8]

Each loop's packets are copied with their timestamps moved on by the clip's duration. AAC carries
its encoder delay and padding into every loop, so the decoded audio runs longer than the timeline:
placed by sample count (the old `video.py`) it falls behind the lips a little more every loop,
placed by timestamps it does not. Printed: the clip, the joined file and its first and last 20 s
piece (cut by timestamp from the joined file), each with offset, LSE-C, verdict and the decoder's
warnings; all should agree with the clip. Needs ../shared/data (or any clip via --clip).
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import av  # noqa: E402
from clips import find_clip  # noqa: E402

from syncnet import load_model, score_video  # noqa: E402


def join(clip: Path, out: Path, loops: int, keep=None):
    """`loops` copies of `clip` back to back (stream copy); `keep`: only packets in this (start, end) s."""
    with av.open(str(clip)) as source:
        duration = source.duration / av.time_base
    with av.open(str(out), "w") as joined:
        streams, last_dts = None, {}
        for loop in range(loops):
            with av.open(str(clip)) as source:
                wanted = [source.streams.video[0], source.streams.audio[0]]
                if streams is None:
                    streams = {stream.index: joined.add_stream_from_template(stream) for stream in wanted}
                for packet in source.demux(wanted):
                    if packet.dts is None:
                        continue
                    shift = round(loop * duration / packet.time_base)
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    # ffmpeg's muxer: "non-monotonic DTS, changing to last + 1" - the overlap at each join
                    if packet.dts <= last_dts.get(packet.stream.index, packet.dts - 1):
                        packet.dts = last_dts[packet.stream.index] + 1
                        packet.pts = max(packet.pts, packet.dts)
                    last_dts[packet.stream.index] = packet.dts
                    time = float(packet.pts * packet.time_base)
                    if keep and not keep[0] <= time < keep[1]:
                        continue
                    packet.stream = streams[packet.stream.index]
                    joined.mux(packet)
    return duration


def line(label, result):
    if result.status != "ok":
        return f"{label:>12}: error {result.error}"
    return (
        f"{label:>12}: offset {result.offset_frames:+3d}, LSE-C {result.confidence:6.3f}, "
        f"{'in sync' if result.in_sync else 'NOT in sync'} ({result.verdict_reason}); warnings: {result.warnings}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="*Wav2Lip__checkpoints_test.mov", help="glob under ../shared/data/clips, or a path")
    parser.add_argument("--loops", type=int, default=8)
    args = parser.parse_args()
    clip = find_clip(args.clip)
    model = load_model()
    with tempfile.TemporaryDirectory() as folder:
        joined = Path(folder) / "joined.mp4"
        duration = join(clip, joined, args.loops)
        total = duration * args.loops
        print(f"{clip.name}: {duration:.2f} s, joined {args.loops} times: {total:.1f} s")
        print(line("clip", score_video(clip, model)))
        print(line("joined", score_video(joined, model)))
        for name, start in (("first 20 s", 0.0), ("last 20 s", total - 20.0)):
            piece = Path(folder) / f"{start:.0f}.mp4"
            join(clip, piece, args.loops, keep=(start, start + 20.0))
            print(line(name, score_video(piece, model)))


if __name__ == "__main__":
    main()
