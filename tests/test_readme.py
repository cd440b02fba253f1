"""The README's "Extend" recipes as a user copies them: every ```python block there that names a file on its first
line is written into a copy of the project as written (a new module, or the registry line it replaces), ruff
checks them with the project's settings, and the new dataset and the new method each train a step through the
real CLIs.  The manual cannot rot without this failing."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import save_random_checkpoint
from PIL import Image

from dataloaders.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", "run", "data", "demo_out", "study", "paper", "sweeps", "__pycache__",
                              ".pytest_cache", ".ruff_cache", "*.pth", "*.pth.tar")


def extend_blocks():
    """(path, code, registry line?) of the Extend section's ```python blocks, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Extend"):]
    section = section[:section.index("\n## ", 3)]
    blocks = []
    for code in re.findall(r"```python\n(.*?)```", section, re.S):
        first = code.splitlines()[0]
        match = re.match(r"# ([\w/]+\.py)(: the registry line)?$", first)
        assert match, f"an Extend block must name its file on its first line: {first!r}"
        blocks.append((match.group(1), code, bool(match.group(2))))
    return blocks


def apply(copy, blocks):
    """Write the blocks into ``copy``: a module as written, a registry line in place of the file's own."""
    touched = []
    for path, code, registry in blocks:
        target = copy / path
        if registry:
            line = code.splitlines()[1]
            old = target.read_text()
            current = [x for x in old.splitlines() if x.startswith("from . import ")]
            assert len(current) == 1, f"{path} has no single registry line"
            target.write_text(old.replace(current[0], line))
        else:
            assert not target.exists(), f"the README's {path} would replace a module of the project"
            target.write_text(code)
        touched.append(str(target))
    return touched


def toy_data(root):
    """The toy layout: <root>/<split>/images/*.jpg and labels/*.png (ids 0/1, 255 void)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
        for i in range(n):
            label = np.zeros((32, 32), np.uint8)
            label[8:24, 8:24] = 1
            label[0] = 255
            image = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
            image[label == 1] = (220, 30, 30)
            Image.fromarray(image).save(root / split / "images" / f"{i}.jpg")
            Image.fromarray(label, mode="L").save(root / split / "labels" / f"{i}.png")


def test_the_extend_section_has_the_dataset_and_the_method_with_their_registry_lines():
    paths = [(p, registry) for p, _, registry in extend_blocks()]
    assert paths == [("dataloaders/datasets/toy.py", False), ("dataloaders/datasets/__init__.py", True),
                     ("distillation/l1.py", False), ("distillation/__init__.py", True)]


@pytest.mark.slow
def test_the_extend_recipes_copied_as_written_pass_ruff_and_train(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=SKIP)
    touched = apply(copy, extend_blocks())
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", *touched], cwd=copy, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    toy_data(tmp_path / "toy")
    synthetic = generate(tmp_path / "synthetic", n_train=4, n_val=2, size=32, seed=0)
    teacher = save_random_checkpoint(tmp_path / "teacher.pth.tar", "resnet18")
    env = dict(os.environ, ATTNFD_TOY_ROOT=str(tmp_path / "toy"), ATTNFD_SYNTHETIC_ROOT=synthetic,
               OMP_NUM_THREADS="2")
    common = ["--base-size", "32", "--crop-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0",
              "--no-pretrained", "--no-cuda"]
    runs = {"toy": ["train.py", "--dataset", "toy", "--backbone", "mobilenet", *common],
            "l1": ["train_kd.py", "--dataset", "synthetic", "--backbone", "mobilenet", "--teacher_path", str(teacher),
                   "--attn_lambda", "0", "--l1_lambda", "0.5", *common]}
    for name, argv in runs.items():
        p = subprocess.run([sys.executable, *argv, "--run-dir", str(tmp_path / "run"), "--checkname", name],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        exp = tmp_path / "run" / argv[argv.index("--dataset") + 1] / name / "experiment_0"
        history = json.loads((exp / "history.json").read_text())
        assert len(history) == 1 and history[0]["train"]["total_loss_iter"] > 0 and "val" in history[0]
    assert "l1" in history[0]["train"] and not any(k.startswith("attnfd") for k in history[0]["train"])
    assert "L1: l1_lambda 0.5" in p.stdout  # the generic notes line of its hyperparameters
