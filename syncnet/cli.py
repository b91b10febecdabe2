"""`syncnet` command line: a dispatcher over the modules that do the work.

Each command lives in its module as `configure_parser(parser)` + `run_command(args) -> exit code`,
imported only when that command runs (TensorFlow takes seconds to import; `syncnet --help` should not).
Errors a user can cause - our `UserError` (bad files, bad options) and the operating system's
(a folder that is not there, no permission, a full disk) - surface as one line on stderr and exit
1. Anything else is a bug in syncnet and keeps its traceback.
"""

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError, one_line

# command -> (module, one-line help)
COMMANDS = {
    "score": ("syncnet.scoring", "score videos: audio-video offset, LSE-D, LSE-C, sync probability"),
    "fix": ("syncnet.fixing", "write a copy of a video with its audio shifted into sync"),
    "speakers": ("syncnet.speakers", "tell which face speaks when"),
    "calibrate": ("syncnet.calibrating", "fit the in-sync / tampered threshold on your own real clips"),
    "preprocess": ("syncnet.preprocess", "turn raw videos into training shards (face tracks, crops, MFCC)"),
    "train": ("syncnet.train", "train a SyncNet expert on preprocessed shards"),
    "evaluate": ("syncnet.evaluation", "pair ROC-AUC and offset accuracy of an expert on held-out shards"),
    "convert-weights": ("syncnet.convert", "convert syncnet_python's syncnet_v2.model to a .keras file"),
    "serve": ("syncnet.server", "web page and REST API for scoring"),
    "monitor": ("syncnet.monitor", "score a live stream or file chunk by chunk"),
}

# Exceptions that mean "your input, options or machine are wrong", not "syncnet has a bug".
USER_ERRORS = (UserError, OSError)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="syncnet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"syncnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command not in COMMANDS:
        parser.parse_args(argv)  # prints help / "invalid choice" and exits
        parser.print_help(sys.stderr)
        return 2

    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"syncnet {command}", description=COMMANDS[command][1])
    module.configure_parser(parser)
    args = parser.parse_args(argv[argv.index(command) + 1 :])
    try:
        return module.run_command(args)
    except KeyboardInterrupt:
        print("syncnet: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        print(f"syncnet {command}: error: {one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
