"""What the user got wrong, as one exception type, and how an error reads in one line."""


class UserError(ValueError):
    """Bad input or options - a file that is not a video, an option out of range, a model file that
    is not one - with a one-line reason. The command line prints it and exits 1; any other exception
    is a bug in syncnet and shows its traceback."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (TensorFlow's run on for pages)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
