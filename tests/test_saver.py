import argparse
import os

import pytest
import torch

from utils.outputs import Outputs
from utils.saver import CheckpointError, Home, Saver, load_file, save_atomic


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    good = {"state_dict": {"w": torch.ones(2)}, "epoch": 1}
    save_atomic(good, path)
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_atomic({"bad": Unpicklable()}, path)
    assert load_file(str(path))["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint.pth.tar"]


def test_atomic_files_get_the_mode_of_a_plain_open(tmp_path):
    """mkstemp makes files private (0600): on a shared machine nobody else could read the checkpoints."""
    old = os.umask(0o022)
    try:
        save_atomic({"state_dict": {"w": torch.ones(1)}}, tmp_path / "c.pth")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c.pth").st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777 == 0o644


@pytest.mark.parametrize("content, problem", [
    ([1, 2], "holds a list, not a dict"),
    ({"state_dict": {"w": 3}}, "not a non-empty mapping of names to tensors"),
    ({"state_dict": {}}, "not a non-empty mapping"),
    ({"state_dict": {"w": torch.ones(1)}, "args": [1]}, "its args is a list"),
    ({"state_dict": {"w": torch.ones(1)}, "epoch": "3"}, "its epoch is a str"),
    ({"state_dict": {"w": torch.ones(1)}, "epoch": -1}, "negative"),
    ({"state_dict": {"w": torch.ones(1)}, "optimizer": {"param_groups": 3}}, "no list of param_groups"),
    ({"state_dict": {"w": torch.ones(1)}, "connectors": {"a": 1}}, "connectors are not a mapping"),
    ({"state_dict": {"w": torch.ones(1)}, "rng": {"python": 1}}, "rng states are malformed"),
    ({"state_dict": {"w": torch.ones(1)}, "partial": [1, 2]}, "partial epoch totals are malformed"),
])
def test_malformed_checkpoints_are_one_clear_error(tmp_path, content, problem):
    """Files that load safely but are not checkpoints crashed deep in the model or the trainer."""
    torch.save(content, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=f"--resume: .*bad.pth is not a usable checkpoint: .*{problem}"):
        load_file(str(tmp_path / "bad.pth"))


def test_load_file_refuses_pickled_code_and_names_the_file(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"obj": argparse.Namespace(a=1)}, path)  # not an allowed type for weights_only
    with pytest.raises(CheckpointError, match="--teacher_path: cannot read checkpoint .*evil.pth") as e:
        load_file(str(path), "--teacher_path")
    assert "False" not in str(e.value)  # never the advice to turn safe loading off
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_file(str(tmp_path / "absent.pth"))


def make_saver(run_dir, dataset, checkname):
    """A Saver of a new experiment, behind the guard train.py gives it."""
    home = Home(run_dir, dataset, checkname)
    return Saver(home, Outputs("train.py").writes_run("--run-dir", home.directory).check())


def test_model_best_is_the_best_over_experiments(tmp_path):
    W = {"w": torch.ones(1)}  # noqa: N806
    first = make_saver(str(tmp_path), "pascal", "x")
    first.save_experiment_config({"lr": 0.1, "dataset": "pascal"})
    first.save_checkpoint({"state_dict": W, "best_pred": 0.5, "tag": "first"}, is_best=True)
    second = make_saver(str(tmp_path), "pascal", "x")
    assert second.experiment_dir.endswith("experiment_1")
    second.save_checkpoint({"state_dict": W, "best_pred": 0.4, "tag": "second"}, is_best=True)
    best = tmp_path / "pascal" / "x" / "model_best.pth.tar"
    assert load_file(str(best))["tag"] == "first"
    second.save_checkpoint({"state_dict": W, "best_pred": 0.6, "tag": "second-better"}, is_best=True)
    assert load_file(str(best))["tag"] == "second-better"
    assert (tmp_path / "pascal/x/experiment_0/parameters.txt").read_text().count("lr:0.1") == 1


def test_a_run_that_ends_before_its_first_checkpoint_leaves_nothing(tmp_path):
    saver = make_saver(str(tmp_path / "run"), "pascal", "x")
    saver.save_experiment_config({"lr": 0.1})
    saver.discard()
    assert not (tmp_path / "run").exists()  # the folders it made, and only those
    (tmp_path / "run" / "pascal" / "x").mkdir(parents=True)
    (tmp_path / "run" / "pascal" / "x" / "mine.txt").write_text("a user's file")
    saver = make_saver(str(tmp_path / "run"), "pascal", "x")
    saver.save_checkpoint({"best_pred": 0.1}, is_best=False)
    saver.discard()  # it has a checkpoint: kept
    assert (tmp_path / "run/pascal/x/experiment_0/checkpoint.pth.tar").exists()
    later = make_saver(str(tmp_path / "run"), "pascal", "x")
    later.discard()
    assert not (tmp_path / "run/pascal/x/experiment_1").exists() and (tmp_path / "run/pascal/x/mine.txt").exists()
