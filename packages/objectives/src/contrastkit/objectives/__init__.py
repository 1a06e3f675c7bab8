"""contrastkit.objectives: contrastive and self-distillation objectives as pure PyTorch functions.

SimCLR NT-Xent, N-pair, MoCo v2, ISD and BYOL losses; i-Mix mixing; memory queues and momentum
(EMA) teachers. Depends on torch only.
"""

from contrastkit.objectives._version import __version__
from contrastkit.objectives.ema import MomentumTeacher, cosine_momentum, ema_update
from contrastkit.objectives.functional import (
    byol_loss,
    isd_loss,
    moco_loss,
    npair_loss,
    nt_xent_loss,
)
from contrastkit.objectives.losses import BYOLLoss, ISDLoss, MoCoLoss, NPairLoss, NTXentLoss
from contrastkit.objectives.mixing import imix_cutmix, imix_mixup
from contrastkit.objectives.queue import MemoryQueue

__all__ = [
    "BYOLLoss",
    "ISDLoss",
    "MemoryQueue",
    "MoCoLoss",
    "MomentumTeacher",
    "NPairLoss",
    "NTXentLoss",
    "__version__",
    "byol_loss",
    "cosine_momentum",
    "ema_update",
    "imix_cutmix",
    "imix_mixup",
    "isd_loss",
    "moco_loss",
    "npair_loss",
    "nt_xent_loss",
]
