"""One guard for every file a command writes, and the writers it hands out (README: "Bad input").

Before any work a command declares what it reads (checkpoints, dataset roots with everything under them, image
inputs, label folders, sweep records) and what it writes (files, folders and the files planned in them, a run
folder); ``check()`` then refuses, with one line naming the flag (exit status 2):

* an output that is an input, or lies inside an input folder (never, not even with ``--overwrite``);
* a file where a folder is expected or a folder where a file is; a file whose folder does not exist;
* an existing file that this command did not write, unless ``--overwrite``.

"This command wrote it" is read from a stamp the writers put in every file (``attnfd <command> <role>``, the role
being the flag it was written for): a JSON object's ``written_by``, a PNG text chunk, a line of a Markdown or log
file, an entry of a .pt2 / TorchScript archive, an ONNX metadata property.  So rerunning a command over its own
outputs needs no flag, while a user's file, another command's, or this command's written for another role (a
sweep's records are not its tables) is never replaced without one.

The writers (``write_json``, ``write_text``, ``write_png``, ``write_figure``, ``write_with``) write only declared
paths, atomically (a temporary file beside the target, then ``os.replace``), with the mode a plain ``open`` gives
under the umask.
"""
import contextlib
import json
import os
import tempfile
import zipfile

from utils.cli import UsageError

STAMP_FILE = "attnfd.txt"  # the entry that stamps a .pt2 / TorchScript archive


def stamp(command, role):
    """What a file written by ``command`` as ``role`` (its flag, e.g. ``--json``) carries."""
    return f"attnfd {command} {role}"


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Write ``path`` through ``write(tmp)`` on a temporary file in the same folder, then os.replace.  The file
    gets the mode a plain ``open`` would give it (mkstemp's are private to their owner)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix="tmp-",
                               suffix="-" + os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------------------------
# Stamps: which command wrote a file


def written_by(path):
    """The stamp a file of this project carries (``attnfd <command>``), or None (a file of anyone else, or one
    this project cannot read a stamp from)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".json":
            with open(path) as f:
                obj = json.load(f)
            return obj.get("written_by") if isinstance(obj, dict) else None
        if ext == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return im.info.get("Software")
        if ext in (".md", ".log", ".txt"):
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
            for line in lines[:1] + lines[-1:]:
                for head, tail in (("<!-- ", " -->"), ("# ", "")):
                    if line.startswith(head + "attnfd ") and line.endswith(tail):
                        return line[len(head):len(line) - len(tail)]
            return None
        if ext == ".onnx":
            import onnx

            model = onnx.load(path, load_external_data=False)
            return next((p.value for p in model.metadata_props if p.key == "written_by"), None)
        if zipfile.is_zipfile(path):  # .pt2, TorchScript
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("/extra/" + STAMP_FILE)]
                return z.read(names[0]).decode() if names else None
    except Exception:  # unreadable: not a stamped file of this project
        return None
    return None


# ----------------------------------------------------------------------------------------------------------------
# The guard


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def _inside(path, folder):
    """Whether ``path`` is ``folder`` or lies under it (real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Outputs:
    """The guard of one command (``command``: its name in stamps, e.g. ``eval.py``)."""

    def __init__(self, command, overwrite=False):
        self.command, self.overwrite = command, overwrite
        self.inputs = {}    # real path -> what (files)
        self.trees = []     # (what, real path): folders whose every file is an input
        self.files = []     # (flag, path, role, its folder must exist): output files
        self.folders = []   # (flag, path): output folders
        self.areas = []     # (flag, folder, files it may replace, role): folders whose files are the command's own
        self.allowed = {}   # real path -> role: the files the writers may write
        self.allowed_dirs = []  # (real path, role): folders under which any file may be written
        self.checked = False

    @classmethod
    def from_args(cls, parser, args, command, skip=()):
        """A guard that knows the inputs and output files the parser's flags declare (``add_input`` /
        ``add_output``; ``skip``: dests that are not inputs this time); the command adds its output folders and
        what it finds out later (a dataset's files)."""
        guard = cls(command, getattr(args, "overwrite", False))
        for dest, (flag, kind) in parser.inputs.items():
            value = getattr(args, dest, None)
            if value is None or dest in skip:
                continue
            if kind == "dataset":
                guard.reads_dataset(value, getattr(args, "use_sbd", False))
            elif kind == "images":
                guard.reads_images(flag, value)
            else:
                guard.reads(flag, *(value if kind == "files" else [value]), tree=kind == "folder")
        for dest, (flag, kind) in parser.outputs.items():
            if kind == "file":
                guard.writes(flag, getattr(args, dest, None))
        return guard

    # -- declarations ------------------------------------------------------------------------------------------
    def reads(self, what, *paths, tree=False):
        """Inputs: files, or with ``tree`` folders whose every file is an input (``what`` names them in errors,
        e.g. ``--checkpoint``)."""
        for path in paths:
            if path and (tree or os.path.isdir(path)):
                self.trees.append((what, _real(path)))
            elif path:
                self.inputs.setdefault(_real(path), what)
        return self

    def reads_images(self, flag, spec):
        """The images an ``--input`` names: a folder (all of it), a file or a glob's files."""
        from utils.inference import list_images

        return self.reads(flag, spec, tree=True) if os.path.isdir(spec) else self.reads(flag, *list_images(spec, flag))

    def reads_dataset(self, name, use_sbd=False):
        """The root of dataset ``name`` and everything under it (and SBD's with ``use_sbd``), where configured."""
        from dataloaders import dataset_root
        from dataloaders.datasets import DatasetError

        for dataset in [name] + (["sbd"] if use_sbd else []):
            with contextlib.suppress(DatasetError):
                root = dataset_root(dataset)
                self.reads(f"--dataset {name}'s root" if dataset == name else "the SBD root", root, tree=True)
        return self

    def writes(self, flag, path, role=None, folder_exists=True):
        """An output file (``role``: what its stamp names; default the flag)."""
        if path:
            self.files.append((flag, path, role or flag.split()[0], folder_exists))
        return self

    def writes_folder(self, flag, path, names=(), role=None):
        """An output folder and the files (names relative to it) planned in it."""
        if path:
            self.folders.append((flag, path))
            for name in names:
                self.writes(f"{flag} ({name})", os.path.join(path, name), role or flag, folder_exists=False)
        return self

    def writes_run(self, flag, directory, replaces=(), role=None):
        """A folder whose files are all this command's own (a run folder ``run/<dataset>/<checkname>``, a sweep's
        cells): it must not be or lie in an input, and the files it may replace there (``model_best.pth.tar``)
        must not be inputs.  What is in it is not checked file by file."""
        self.areas.append((flag, directory, list(replaces), role or flag))
        return self

    def owns(self, path, role):
        """A file the command has found to be its own (an earlier version's record, unstamped): it may be
        written, as ``role``."""
        self.allowed[_real(path)] = role
        return self

    # -- the check ---------------------------------------------------------------------------------------------
    def _input_of(self, path):
        """(what, path) of the input that ``path`` is or lies inside, else None."""
        real = _real(path)
        if real in self.inputs:
            return self.inputs[real], real
        return next(((what, tree) for what, tree in self.trees if _inside(real, tree)), None)

    def _refuse_input(self, flag, path):
        hit = self._input_of(path)
        if hit is None:
            return
        what, inp = hit
        if _real(path) == inp:
            raise UsageError(f"{flag} {path} is also {what}: writing it would destroy an input; choose another "
                             f"{flag.split()[0]}")
        raise UsageError(f"{flag} {path} lies inside {what} {inp}, which this command reads; write outside it")

    def _check_file(self, flag, path, role, folder_exists):
        if os.path.isdir(path):
            raise UsageError(f"{flag} {path} is a folder; give a file name")
        self._refuse_file_above(flag, path)
        self._refuse_input(flag, path)
        folder = os.path.dirname(os.path.abspath(path))
        if folder_exists and not os.path.isdir(folder):
            raise UsageError(f"{flag} {path}: folder {folder} does not exist (create it first)")
        if os.path.lexists(path) and not self.overwrite and self.allowed.get(_real(path)) != role:
            if os.path.islink(path) or not os.path.isfile(path):
                raise UsageError(f"{flag} {path} exists and is not a regular file; choose another path")
            if written_by(path) != stamp(self.command, role):
                raise UsageError(f"{flag} {path} exists and was not written by {self.command} {role}; choose another "
                                 f"path, or add --overwrite to replace it")

    @staticmethod
    def _refuse_file_above(flag, path):
        """A path under a file cannot be made."""
        above = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(above) and os.path.dirname(above) != above:
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise UsageError(f"{flag} {path}: {above} is a file, not a folder; choose another path")

    def _check_folder(self, flag, path):
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{flag} {path} is a file; give a folder")
        self._refuse_file_above(flag, path)
        hit = self._input_of(path)
        if hit is not None:
            what, inp = hit
            relation = "is" if _real(path) == inp else "lies inside"
            raise UsageError(f"{flag} {path} {relation} {what} {inp}, which this command reads; its outputs could "
                             f"replace inputs: write them to another folder")

    def check(self):
        """Refuse (UsageError, one line) the first output that breaks a rule; before any work is done."""
        for flag, path in self.folders:
            self._check_folder(flag, path)
        for flag, directory, replaces, _ in self.areas:
            self._check_folder(flag, directory)
            for file in replaces:
                self._refuse_input(f"{flag} ({os.path.basename(file)})", file)
        seen = {}
        for flag, path, role, folder_exists in self.files:
            self._check_file(flag, path, role, folder_exists)
            real = _real(path)
            if seen.get(real, (flag,))[0] != flag:
                raise UsageError(f"{flag} {path} is also {seen[real][0]}: one command would write it twice; choose "
                                 f"another {flag.split()[0]}")
            seen[real] = (flag, role)
        self.allowed.update({real: role for real, (_, role) in seen.items()})
        self.allowed_dirs += [(_real(directory), role) for _, directory, _, role in self.areas]
        self.checked = True
        return self

    # -- writers -----------------------------------------------------------------------------------------------
    def _role(self, path):
        """The role ``path`` was declared for (the writers write nothing else), its folder made."""
        real = _real(path)
        role = self.allowed.get(real) if self.checked else None
        role = role or next((r for d, r in self.allowed_dirs if _inside(real, d)), None)
        if role is None:
            raise RuntimeError(f"{self.command} writes {path}, which it did not declare to its output guard")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return role

    def write_with(self, path, write):
        """``write(tmp)`` makes the file; it lands at ``path`` atomically (unstamped: a format without a stamp,
        or one the caller stamps itself with ``stamp_for(path)``)."""
        self._role(path)
        atomic_write(path, write)
        return path

    def stamp_for(self, path):
        return stamp(self.command, self._role(path))

    def write_text(self, path, text):
        """A text file, stamped: a trailing HTML comment in Markdown, a leading ``#`` line otherwise."""
        mark = self.stamp_for(path)
        body = text.rstrip("\n") + f"\n<!-- {mark} -->\n" if path.endswith(".md") else f"# {mark}\n{text}"
        return self.write_with(path, lambda tmp: write_file(tmp, body))

    def write_json(self, path, obj):
        """A JSON object, stamped with ``written_by``."""
        mark = self.stamp_for(path)
        return self.write_with(path, lambda tmp: write_file(tmp, json.dumps({"written_by": mark, **obj}, indent=1)))

    def write_png(self, path, image):
        """A PIL image as PNG, stamped in a text chunk."""
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Software", self.stamp_for(path))
        return self.write_with(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))

    def write_figure(self, path, fig, **kwargs):
        """A matplotlib figure as PNG, stamped; the figure is closed."""
        import matplotlib.pyplot as plt

        mark = self.stamp_for(path)
        try:
            return self.write_with(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": mark},
                                                                 **kwargs))
        finally:
            plt.close(fig)

    def open_log(self, path, append=False):
        """A log that grows while a job runs (not atomic: it is read while it is written); a new one starts with
        its stamp line."""
        mark = self.stamp_for(path)
        f = open(path, "a" if append else "w")
        if not append or f.tell() == 0:
            f.write(f"# {mark}\n")
        return f


def write_file(path, text):
    """Write ``text`` to ``path`` (plain: the writers above make it atomic through ``write_with``)."""
    with open(path, "w") as f:
        f.write(text)
