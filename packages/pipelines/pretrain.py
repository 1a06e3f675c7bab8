"""Self-supervised pretraining from the command line; the code is `contrastkit.pipelines.pretrain.main`.

accelerate launch packages/pipelines/pretrain.py --config packages/pipelines/configs/simclr_cifar10.yaml
python packages/pipelines/pretrain.py --config CONFIG.yaml [--output-dir DIR] [--data-dir DIR]
    [--resume latest|PATH] [section.field=value ...]
"""

import sys

from contrastkit.pipelines.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
