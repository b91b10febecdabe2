"""What the user got wrong, as one exception type, how an error reads in one line, and how to
install what a command lacks."""


class UserError(ValueError):
    """Bad input or options - a file that is not a video, an option out of range, a model file that
    is not one - with a one-line reason. The command line prints it and exits 1; any other exception
    is a bug in syncnet and shows its traceback."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (TensorFlow's run on for pages)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def install_hint(extra: str, packages: str) -> str:
    """How to install one of pyproject.toml's optional extras, in words that work wherever the user
    stands: its packages by name, or the extra from a checkout - not the extra of `syncnet` on the
    package index, an unrelated project (this distribution is `syncnet-expert`)."""
    return f"pip install {packages} (the {extra!r} extra; in a checkout: pip install -e '.[{extra}]')"
