"""Self-supervised pretraining from the command line (also installed as `contrastkit-pretrain`).

accelerate launch packages/pipelines/pretrain.py --config packages/pipelines/configs/simclr_cifar10.yaml
python packages/pipelines/pretrain.py --config CONFIG.yaml [--output-dir DIR] [--data-dir DIR]
    [--resume latest|PATH] [--print-config] [section.field=value ...]   (in any order)

The config is read and checked before torch is imported (`contrastkit.pipelines.entry_points`),
so a config error is reported at once; the run itself is `contrastkit.pipelines.pretrain`.
"""

import sys

from contrastkit.pipelines.entry_points import pretrain_main

if __name__ == "__main__":
    sys.exit(pretrain_main())
