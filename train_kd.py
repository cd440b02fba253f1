"""Distil a frozen teacher into a student with AttnFD, e.g.
python train_kd.py --backbone resnet18 --dataset pascal --nesterov --epochs 120 --batch-size 6 --attn_lambda 2"""
from training import get_args_parser, main

if __name__ == "__main__":
    main(get_args_parser(kd=True).parse_args(), kd=True)
