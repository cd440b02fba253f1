"""What every command-line script shares: one-line argparse errors, value ranges checked by argparse, and
one way to turn a known error into ``error: <one line>`` with exit status 2 (never a traceback)."""
import argparse
import contextlib
import math
import signal
import sys
import threading


class UsageError(ValueError):
    """A flag value or combination that cannot run; the message names the flag and what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block): 'error: ... (see --help)', exit 2; --help shows
    the defaults.  ``add_input`` / ``add_output`` declare what a flag names, for the output guard
    (``utils.outputs``) and the test that points every output at every input (tests/test_outputs.py)."""

    INPUT_KINDS = ("file", "files", "images", "folder", "dataset")  # files: nargs="+" of files
    OUTPUT_KINDS = ("file", "folder", "prefix", "run")  # prefix: PREFIX.json/.md/.png; run: a run folder's root

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self.inputs, self.outputs = {}, {}  # dest -> (flag, kind)

    def add_input(self, *flags, kind="file", **kwargs):
        assert kind in self.INPUT_KINDS, kind
        if "choices" not in kwargs:
            kwargs.setdefault("type", path)
        action = self.add_argument(*flags, **kwargs)
        self.inputs[action.dest] = (flags[0], kind)
        return action

    def add_output(self, *flags, kind="file", **kwargs):
        assert kind in self.OUTPUT_KINDS, kind
        kwargs.setdefault("type", path)
        action = self.add_argument(*flags, **kwargs)
        self.outputs[action.dest] = (flags[0], kind)
        return action

    def add_overwrite(self):
        self.add_argument("--overwrite", action="store_true",
                          help="replace existing output files that this command did not write (an input is never "
                               "replaced)")

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def path(text):
    """An argparse ``type``: a non-empty path (an empty one would silently mean the current folder, or nothing)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return text


def number(kind=float, low=None, high=None, low_open=False):
    """An argparse ``type``: ``kind`` (int or float) within [low, high] (``low_open``: above ``low``); NaN and
    infinities are refused.  ``number(int, 1)`` is a positive integer."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = _integral(text) if kind is int else None  # 2e4: an integer in float notation
            if value is None:
                raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                    from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'above' if low_open else 'at least'} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be at most {high}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _integral(text):
    """The integer a float-notation ``text`` spells (``2e4``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def one_line(e):
    """The last meaningful line of an error (DataLoader workers wrap the original in a traceback)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(e).__name__
    for prefix in ("dataloaders.datasets.base.DatasetError: ", "DatasetError: "):
        line = line.removeprefix(prefix)
    return line


@contextlib.contextmanager
def one_line_errors(*errors, where=""):
    """Within: an error of the classes ``errors`` (and ``UsageError``) prints ``error: <one line><where>`` on
    stderr and exits with status 2; ``where``: a string, or a function giving one at that time.  Ctrl-C exits
    with 130 and one line, without a traceback."""
    try:
        yield
    except (UsageError, *errors) as e:
        print(f"error: {one_line(e)}{where() if callable(where) else where}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: every file is written atomically, so none is left half-made
        print("stopped by SIGINT (Ctrl-C)", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


@contextlib.contextmanager
def stop_signals(handler):
    """Within: SIGINT and SIGTERM go to ``handler`` (``signal.SIG_IGN``: ignored), in the main thread (elsewhere
    nothing changes); the previous handlers come back after."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield handler
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cli_main(run, *errors):
    """``main(args)`` of a CLI: ``run(args)`` with the errors ``errors`` (and UsageError) as one line, exit 2."""
    def main(args):
        with one_line_errors(*errors):
            return run(args)
    return main
