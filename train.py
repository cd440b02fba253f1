"""Train a DeepLabV3+ baseline or teacher, e.g.
python train.py --backbone resnet18 --dataset pascal --nesterov --epochs 120 --batch-size 6"""
from training import get_args_parser, main

if __name__ == "__main__":
    main(get_args_parser().parse_args())
