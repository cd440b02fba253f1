"""tensorboardX logging and PNG grids of input / ground truth / prediction in the dataset palette."""
import os

import torch
from PIL import Image
from tensorboardX import SummaryWriter
from torchvision.utils import make_grid

from dataloaders.utils import decode_seg_map_sequence, denormalize


class TensorboardSummary:
    """The run's tensorboard writer in ``directory``; its PNGs go through the output guard ``outputs``."""

    def __init__(self, directory, outputs=None):
        self.directory, self.outputs = directory, outputs

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
        if png_dir and self.outputs is not None:
            picture = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()  # as save_image
            self.outputs.write_png(os.path.join(png_dir, f"epoch_{global_step:03d}.png"), Image.fromarray(picture))
        return grid
