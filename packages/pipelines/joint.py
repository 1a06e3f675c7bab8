"""Joint supervised + self-supervised training from the command line (also installed as
`contrastkit-joint`).

accelerate launch packages/pipelines/joint.py --config packages/pipelines/configs/joint_isd_myresnet_cifar10.yaml
python packages/pipelines/joint.py --config CONFIG.yaml [--output-dir DIR] [--data-dir DIR]
    [--resume latest|PATH] [--print-config] [section.field=value ...]   (in any order)

The config is read and checked before torch is imported (`contrastkit.pipelines.entry_points`),
so a config error is reported at once; the run itself is `contrastkit.pipelines.joint`.
"""

import sys

from contrastkit.pipelines.entry_points import joint_main

if __name__ == "__main__":
    sys.exit(joint_main())
