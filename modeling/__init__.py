from .cbam import CBAM
from .deeplab import TAPS, DeepLab, Features, load_checkpoint, model_from_checkpoint, num_params

__all__ = ["CBAM", "DeepLab", "Features", "TAPS", "load_checkpoint", "model_from_checkpoint", "num_params"]
