"""tensorboardX logging and PNG grids of input / ground truth / prediction in the dataset palette."""
import os

import torch
from tensorboardX import SummaryWriter
from torchvision.utils import make_grid, save_image

from dataloaders.utils import decode_seg_map_sequence, denormalize


class TensorboardSummary:
    def __init__(self, directory):
        self.directory = directory

    def create_summary(self):
        return SummaryWriter(logdir=self.directory)

    def visualize_image(self, writer, dataset, image, target, output, global_step, n=3, png_dir=None):
        """Rows: images, ground truth, predictions.  Also written as PNG under ``png_dir``."""
        image, target = image[:n].detach().float().cpu(), target[:n].detach().cpu()
        pred = torch.argmax(output[:n].detach(), dim=1).cpu()
        rows = torch.cat([denormalize(image), decode_seg_map_sequence(target, dataset),
                          decode_seg_map_sequence(pred, dataset)])
        grid = make_grid(rows, nrow=len(image), padding=2)
        writer.add_image("Image_GT_Prediction", grid, global_step)
        if png_dir:
            os.makedirs(png_dir, exist_ok=True)
            save_image(grid, os.path.join(png_dir, f"epoch_{global_step:03d}.png"))
        return grid
