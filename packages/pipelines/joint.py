"""Joint supervised + self-supervised training from the command line; the code is
`contrastkit.pipelines.joint.main` (also installed as `contrastkit-joint`).

accelerate launch packages/pipelines/joint.py --config packages/pipelines/configs/joint_isd_myresnet_cifar10.yaml
python packages/pipelines/joint.py --config CONFIG.yaml [--output-dir DIR] [--data-dir DIR]
    [--resume latest|PATH] [section.field=value ...]
"""

import sys

from contrastkit.pipelines.joint import main

if __name__ == "__main__":
    sys.exit(main())
