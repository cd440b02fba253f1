"""What every command-line script shares: one-line argparse errors, value ranges checked by argparse, and
one way to turn a known error into ``error: <one line>`` with exit status 2 (never a traceback)."""
import argparse
import contextlib
import math
import os
import sys


class UsageError(ValueError):
    """A flag value or combination that cannot run; the message names the flag and what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block): 'error: ... (see --help)', exit 2; --help shows
    the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def number(kind=float, low=None, high=None, low_open=False):
    """An argparse ``type``: ``kind`` (int or float) within [low, high] (``low_open``: above ``low``); NaN and
    infinities are refused.  ``number(int, 1)`` is a positive integer."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
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


def _same(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(flag, path, inputs=()):
    """Refuse, before anything runs, an output file that is a folder, lies in a folder that does not exist, or is
    one of the ``inputs`` ((flag, path) pairs): a command never overwrites what it reads."""
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{flag} {path}: folder {folder} does not exist (create it first)")
    for in_flag, in_path in inputs:
        if in_path and _same(path, in_path):
            raise UsageError(f"{flag} {path} is also {in_flag}: writing it would destroy the input; choose another "
                             f"{flag}")


def check_output_dir(flag, path, inputs=()):
    """Refuse an output folder that is a file, or that is (or holds directly) one of the ``inputs`` ((flag, path)
    pairs): outputs written beside inputs could replace them."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a file; give a folder")
    for in_flag, in_path in inputs:
        if in_path and (_same(path, in_path) or _same(path, os.path.dirname(os.path.abspath(in_path)))):
            raise UsageError(f"{flag} {path} holds the input {in_path} ({in_flag}); write the outputs to another "
                             f"folder")


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
    stderr and exits with status 2; ``where``: a string, or a function giving one at that time."""
    try:
        yield
    except (UsageError, *errors) as e:
        print(f"error: {one_line(e)}{where() if callable(where) else where}", file=sys.stderr)
        sys.exit(2)


def cli_main(run, *errors):
    """``main(args)`` of a CLI: ``run(args)`` with the errors ``errors`` (and UsageError) as one line, exit 2."""
    def main(args):
        with one_line_errors(*errors):
            return run(args)
    return main
