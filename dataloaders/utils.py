"""Palettes and colourisation of label maps (VOC palette for pascal and synthetic)."""
import numpy as np
import torch


def voc_palette(n=256):
    """The Pascal VOC colour map (bit-interleaved), as an (n, 3) uint8 array; 255 is (224, 224, 192)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


CITYSCAPES_COLORS = [(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
                     (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
                     (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)]
CAMVID_COLORS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
                 (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]


def get_palette(dataset):
    """A (256, 3) uint8 palette for ``dataset``; unused entries (void included) are black for city/camvid."""
    if dataset in ("cityscapes", "camvid"):
        pal = np.zeros((256, 3), dtype=np.uint8)
        colors = CITYSCAPES_COLORS if dataset == "cityscapes" else CAMVID_COLORS
        pal[: len(colors)] = colors
        return pal
    return voc_palette()


def decode_segmap(label, dataset="pascal"):
    """H x W class indices (numpy or tensor) -> H x W x 3 uint8 colours."""
    label = label.cpu().numpy() if torch.is_tensor(label) else np.asarray(label)
    return get_palette(dataset)[label.astype(np.int64).clip(0, 255)]


def decode_seg_map_sequence(labels, dataset="pascal"):
    """B x H x W labels -> B x 3 x H x W float tensor in [0, 1] (for make_grid / tensorboard)."""
    return torch.from_numpy(np.stack([decode_segmap(lab, dataset) for lab in labels])).permute(0, 3, 1, 2).float() / 255


def denormalize(images, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    """Undo ImageNet normalisation: B x 3 x H x W -> values in [0, 1]."""
    mean = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
