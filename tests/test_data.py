import argparse
import os
import warnings

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from dataloaders import build_dataset, build_loaders, make_data_loader
from dataloaders.datasets import DatasetError
from dataloaders.synthetic import generate
from dataloaders.transforms import MEAN, STD, RandomShortSideScale, SegmentationPreset
from dataloaders.utils import decode_segmap, voc_palette
from mypath import Path


def save_palette_png(path, label):
    im = Image.fromarray(label.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().flatten().tolist())
    im.save(path)


def save_jpg(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


def stripes_label(h, w, k):
    lab = np.zeros((h, w), np.uint8)
    lab[:, : w // 2] = k
    lab[:2] = 255
    return lab


def make_voc(root, train, val, h=40, w=56):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(root / d, exist_ok=True)
    for i, name in enumerate(train + val):
        save_jpg(root / "JPEGImages" / f"{name}.jpg", h, w, i)
        save_palette_png(root / "SegmentationClass" / f"{name}.png", stripes_label(h, w, 1 + i % 20))
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(train) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(val) + "\n")


def args_for(dataset, crop=40, **kw):
    """The namespace of the reference's make_data_loader(args)."""
    kw.setdefault("use_sbd", False)
    return argparse.Namespace(dataset=dataset, base_size=crop, crop_size=crop, batch_size=2, **kw)


def dataset_split(dataset, name, crop=40, **kw):
    return build_dataset(dataset, name, crop, crop, **kw)


def loaders(dataset, crop=40, batch_size=2, **kw):
    return build_loaders(dataset, batch_size, crop, crop, **kw)


def test_voc_loader_labels_splits_and_workers(tmp_path, monkeypatch):
    root = tmp_path / "VOC2012"
    make_voc(root, ["a", "b", "c", "d"], ["e", "f"])
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(root))
    assert Path.db_root_dir("pascal") == str(root)
    train, val, test, n = make_data_loader(args_for("pascal"), num_workers=2)
    assert n == 21 and test is None
    assert len(train.dataset) == 4 and len(val.dataset) == 2
    batches = list(train)
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 3, 40, 40)
    assert batches[0]["image"].dtype == torch.float32 and batches[0]["label"].dtype == torch.int64
    samples = list(val)
    # val: short side (40) == crop_size, so labels come back unchanged
    expected = stripes_label(40, 56, 1 + 4 % 20)
    assert samples[0]["label"].shape == (1, 40, 56)
    assert np.array_equal(samples[0]["label"][0].numpy(), expected)


def test_voc_root_may_be_the_folder_above_voc2012(tmp_path, monkeypatch):
    make_voc(tmp_path / "VOCdevkit" / "VOC2012", ["a"], ["b"])
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(tmp_path))
    assert len(dataset_split("pascal", "val")) == 1


def test_val_resizes_short_side_to_crop_size(tmp_path, monkeypatch):
    root = tmp_path / "VOC2012"
    make_voc(root, ["a"], ["b"], h=30, w=45)
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(root))
    sample = dataset_split("pascal", "val", 60)[0]
    assert sample["image"].shape == (3, 60, 90) and sample["label"].shape == (60, 90)
    assert set(sample["label"].unique().tolist()) <= {0, 2, 255}
    full = dataset_split("pascal", "val", 60, full_res=True)[0]
    assert full["label"].shape == (30, 45)


def test_sbd_merge_is_voc_train_plus_sbd_minus_voc_val(tmp_path, monkeypatch):
    voc = tmp_path / "VOC2012"
    make_voc(voc, ["a", "b"], ["c"])
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    for i, name in enumerate(["b", "c", "d", "e"]):
        save_jpg(sbd / "img" / f"{name}.jpg", 20, 30, 10 + i)
        seg = np.full((20, 30), 9 + i, np.uint8)
        scipy.io.savemat(sbd / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1)}})
    (sbd / "train.txt").write_text("b\nc\nd\n")
    (sbd / "val.txt").write_text("e\n")
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(voc))
    monkeypatch.setenv("ATTNFD_SBD_ROOT", str(tmp_path / "benchmark_RELEASE"))
    ds = dataset_split("pascal", "train", use_sbd=True)
    names = [os.path.basename(img) for img, _ in ds.pairs]
    assert names == ["a.jpg", "b.jpg", "d.jpg", "e.jpg"]  # VOC's b wins, VOC val's c is excluded
    image, label = ds.load(2)
    assert image.shape == (20, 30, 3) and (label == 11).all()


def test_cityscapes_label_ids_to_train_ids(tmp_path, monkeypatch):
    for split in ("train", "val"):
        img_dir = tmp_path / "leftImg8bit" / split / "aachen"
        gt_dir = tmp_path / "gtFine" / split / "aachen"
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        for k in range(2):
            stem = f"aachen_00000{k}_000019"
            Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
            ids = np.array([[7, 26, 0, 4, 33, 255, 17, 6] * 4] * 16, np.uint8)
            Image.fromarray(ids, mode="L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
    monkeypatch.setenv("ATTNFD_CITYSCAPES_ROOT", str(tmp_path))
    train, val, n = loaders("cityscapes", 16, num_workers=2)
    assert n == 19 and len(train.dataset) == 2
    lab = next(iter(val))["label"][0, 0, :8].tolist()
    assert lab == [0, 13, 255, 255, 18, 255, 5, 255]


def test_camvid_layout_and_void(tmp_path, monkeypatch):
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / (split + "annot")).mkdir()
        for k in range(2):
            Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / split / f"{split}{k}.png")
            lab = np.tile(np.arange(12, dtype=np.uint8)[None, :], (12, 2))[:, :16]
            Image.fromarray(lab, mode="L").save(tmp_path / (split + "annot") / f"{split}{k}.png")
    (tmp_path / "val.txt").write_text("/SegNet/CamVid/val/val1.png /SegNet/CamVid/valannot/val1.png\n")
    monkeypatch.setenv("ATTNFD_CAMVID_ROOT", str(tmp_path))
    train, val, n = loaders("camvid", 12)
    test = dataset_split("camvid", "test", 12)
    assert n == 11 and len(train.dataset) == 2 and len(val.dataset) == 1 and len(test) == 2
    lab = test[0]["label"][0].tolist()
    assert lab[:12] == list(range(11)) + [255]


def test_bad_inputs_give_errors_naming_the_file(tmp_path, monkeypatch):
    root = tmp_path / "VOC2012"
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(root))
    with pytest.raises(DatasetError, match="pascal root not found: .*VOC2012.*ATTNFD_PASCAL_ROOT"):
        dataset_split("pascal", "train")
    make_voc(root, ["a", "b"], ["c"])
    os.remove(root / "ImageSets/Segmentation/val.txt")
    with pytest.raises(DatasetError, match="split list not found: .*val.txt"):
        dataset_split("pascal", "val")
    os.remove(root / "JPEGImages/b.jpg")
    with pytest.raises(DatasetError, match="image listed but absent: .*b.jpg"):
        dataset_split("pascal", "train")
    (root / "JPEGImages/b.jpg").write_bytes(b"not a jpeg")
    ds = dataset_split("pascal", "train")
    with pytest.raises(DatasetError, match="unreadable image .*b.jpg"):
        ds[1]
    save_palette_png(root / "SegmentationClass/a.png", np.zeros((10, 10)))
    with pytest.raises(DatasetError, match="label .*a.png is 10x10 but image .*a.jpg is 56x40"):
        ds[0]
    lab = np.zeros((40, 56), np.uint8)
    lab[0, :3] = (30, 40, 255)
    save_palette_png(root / "SegmentationClass/a.png", lab)
    with pytest.warns(UserWarning, match=r"a.png: label values \[30, 40\] are outside \[0, 21\)"):
        _, label = ds.load(0)
    assert label[0, :3].tolist() == [255, 255, 255]


def test_worker_errors_surface_as_dataset_errors(tmp_path, monkeypatch):
    root = tmp_path / "VOC2012"
    make_voc(root, ["a", "b"], ["c"])
    (root / "JPEGImages/a.jpg").write_bytes(b"broken")
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(root))
    train, *_ = loaders("pascal", num_workers=1)
    with pytest.raises(DatasetError, match="unreadable image .*a.jpg"):
        list(train)


def test_random_scale_range_and_nearest_masks():
    scale = RandomShortSideScale(100)
    shorts = set()
    img = torch.zeros(3, 50, 80, dtype=torch.uint8)
    for _ in range(400):
        out = scale(img)
        shorts.add(out.shape[-2])
        assert out.shape[-1] == int(80 * out.shape[-2] / 50)
    assert min(shorts) >= 50 and max(shorts) <= 200 and min(shorts) < 60 and max(shorts) > 190
    preset = SegmentationPreset(True, base_size=64, crop_size=48)
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(40, 60)))
    image = torch.from_numpy(rng.integers(0, 256, (3, 40, 60), dtype=np.uint8))
    for _ in range(50):
        x, y = preset(image, mask)
        assert x.shape == (3, 48, 48) and y.shape == (48, 48)
        assert set(y.unique().tolist()) <= {0, 3, 7, 255}


@pytest.mark.parametrize("mask_fill", [0, 255])
def test_padding_values(mask_fill):
    torch.manual_seed(0)
    preset = SegmentationPreset(True, base_size=20, crop_size=64, mask_fill=mask_fill)  # short side <= 40 < 64
    image = torch.full((3, 20, 20), 200, dtype=torch.uint8)
    mask = torch.full((20, 20), 5, dtype=torch.uint8)
    x, y = preset(image, mask)
    assert (y[-1, -1] == mask_fill) and (y == 5).any()
    pad_value = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(x[:, -1, -1], pad_value)


def test_synthetic_generator_is_seeded_and_read_as_voc(tmp_path, monkeypatch):
    a = generate(tmp_path / "a", n_train=6, n_val=2, size=48, seed=3)
    generate(tmp_path / "b", n_train=6, n_val=2, size=48, seed=3)
    for sub in ("JPEGImages/synth_00004.jpg", "SegmentationClass/synth_00007.png"):
        assert (tmp_path / "a/VOC2012" / sub).read_bytes() == (tmp_path / "b/VOC2012" / sub).read_bytes()
    monkeypatch.setenv("ATTNFD_SYNTHETIC_ROOT", a)
    train, val, n = loaders("synthetic", 48, num_workers=2)
    assert n == 7 and len(train.dataset) == 6 and len(val.dataset) == 2
    labels = torch.cat([s["label"].flatten() for s in val])
    assert set(labels.unique().tolist()) <= set(range(7)) | {255} and (labels == 255).any()
    assert Image.open(tmp_path / "a/VOC2012/SegmentationClass/synth_00000.png").mode == "P"


def test_synthetic_hard_difficulty_has_smaller_objects(tmp_path):
    fractions = {}
    for difficulty in ("easy", "hard"):
        root = generate(tmp_path / difficulty, n_train=20, n_val=0, size=64, seed=0, difficulty=difficulty)
        folder = os.path.join(root, "SegmentationClass")
        labels = np.stack([np.asarray(Image.open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))])
        fractions[difficulty] = ((labels > 0) & (labels < 255)).mean()  # object pixels
    assert fractions["hard"] < 0.8 * fractions["easy"]
    with pytest.raises(ValueError, match="difficulty"):
        generate(tmp_path / "x", n_train=1, n_val=0, difficulty="extreme")


def test_decode_segmap_uses_the_voc_palette():
    rgb = decode_segmap(np.array([[0, 1, 15, 255]]))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0].tolist() == [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_segmap(np.array([[0, 18]]), "cityscapes")[0, 1].tolist() == [119, 11, 32]


def test_balanced_class_weights_are_computed_once_and_cached(tmp_path, monkeypatch):
    from training.build import class_weights, class_weights_cache, save_npy
    from utils.saver import Home

    root = tmp_path / "VOC2012"
    make_voc(root, ["a", "b"], ["c"])
    monkeypatch.setenv("ATTNFD_PASCAL_ROOT", str(root))
    ds = dataset_split("pascal", "train")
    home = Home(str(tmp_path / "run"), "pascal", "x")
    cache = class_weights_cache(home, use_sbd=False)
    assert cache.startswith(home.directory) and cache != class_weights_cache(home, use_sbd=True)
    w = class_weights(ds, 21, cache)
    # a: columns < 28 are class 1, the rest 0 (rows 0-1 are void); b: class 2 likewise
    valid = 38 * 56
    freq = np.zeros(21)
    freq[0], freq[1], freq[2] = valid, valid / 2, valid / 2
    np.testing.assert_allclose(w, 1 / np.log(1.02 + freq / freq.sum()))
    os.makedirs(home.directory)
    save_npy(cache, w)  # what the run writes once its folder exists
    os.remove(root / "SegmentationClass" / "a.png")  # the cache is used: labels are not read again
    np.testing.assert_allclose(class_weights(ds, 21, cache), w)
    assert not any(f.endswith(".npy") for _, _, files in os.walk(root) for f in files)  # never in the dataset


def test_16_bit_greyscale_images_are_read_as_their_values_not_white(tmp_path):
    """PIL's convert('RGB') clips a mode I;16 image to white; the one reader scales it to 8 bits."""
    from dataloaders.images import InputError, read_rgb

    grey = (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = read_rgb(str(tmp_path / "g16.png"))
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], (grey >> 8).astype(np.uint8)) and rgb.min() == 0 and rgb.max() < 255
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(InputError, match="f.tif: 32-bit float image"):
        read_rgb(str(tmp_path / "f.tif"))
