import argparse
import os

import pytest
import torch

from utils.saver import CheckpointError, Saver, load_file, save_atomic


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    save_atomic({"epoch": 1}, path)
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_atomic({"bad": Unpicklable()}, path)
    assert load_file(str(path)) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["checkpoint.pth.tar"]


def test_load_file_refuses_pickled_code_and_names_the_file(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"obj": argparse.Namespace(a=1)}, path)  # not an allowed type for weights_only
    with pytest.raises(CheckpointError, match="--teacher_path: cannot read checkpoint .*evil.pth"):
        load_file(str(path), "--teacher_path")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_file(str(tmp_path / "absent.pth"))


def test_model_best_is_the_best_over_experiments(tmp_path):
    first = Saver(str(tmp_path), "pascal", "x")
    first.save_experiment_config({"lr": 0.1, "dataset": "pascal"})
    first.save_checkpoint({"best_pred": 0.5, "tag": "first"}, is_best=True)
    second = Saver(str(tmp_path), "pascal", "x")
    assert second.experiment_dir.endswith("experiment_1")
    second.save_checkpoint({"best_pred": 0.4, "tag": "second"}, is_best=True)
    best = tmp_path / "pascal" / "x" / "model_best.pth.tar"
    assert load_file(str(best))["tag"] == "first"
    second.save_checkpoint({"best_pred": 0.6, "tag": "second-better"}, is_best=True)
    assert load_file(str(best))["tag"] == "second-better"
    assert (tmp_path / "pascal/x/experiment_0/parameters.txt").read_text().count("lr:0.1") == 1
