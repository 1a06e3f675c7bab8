"""contrastkit.objectives: contrastive and self-distillation objectives as pure PyTorch functions.

Losses: SimCLR NT-Xent, N-pair, MoCo v2, ISD and BYOL; SimSiam, Barlow Twins and VICReg; DINO and
SwAV (with Sinkhorn-Knopp); MoCo v3, NNCLR (nearest-neighbour support set) and SupCon (supervised
contrastive). Also i-Mix mixing, memory queues and momentum (EMA) teachers. Depends on torch only.
"""

from contrastkit.objectives._version import __version__
from contrastkit.objectives.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from contrastkit.objectives.dino import DINOLoss, dino_loss, dino_teacher_temperature
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
from contrastkit.objectives.mocov3 import MoCoV3Loss, mocov3_loss
from contrastkit.objectives.nnclr import (
    NearestNeighbours,
    NNCLRLoss,
    nearest_neighbours,
    nnclr_loss,
)
from contrastkit.objectives.queue import MemoryQueue
from contrastkit.objectives.simsiam import SimSiamLoss, simsiam_loss
from contrastkit.objectives.supcon import SupConLoss, supcon_loss
from contrastkit.objectives.swav import (
    SwAVLoss,
    SwAVQueue,
    normalize_prototypes,
    sinkhorn_knopp,
    swav_loss,
)
from contrastkit.objectives.vicreg import VICRegLoss, vicreg_loss

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "DINOLoss",
    "ISDLoss",
    "MemoryQueue",
    "MoCoLoss",
    "MoCoV3Loss",
    "MomentumTeacher",
    "NNCLRLoss",
    "NPairLoss",
    "NTXentLoss",
    "NearestNeighbours",
    "SimSiamLoss",
    "SupConLoss",
    "SwAVLoss",
    "SwAVQueue",
    "VICRegLoss",
    "__version__",
    "barlow_twins_loss",
    "byol_loss",
    "cosine_momentum",
    "dino_loss",
    "dino_teacher_temperature",
    "ema_update",
    "imix_cutmix",
    "imix_mixup",
    "isd_loss",
    "moco_loss",
    "mocov3_loss",
    "nearest_neighbours",
    "nnclr_loss",
    "normalize_prototypes",
    "npair_loss",
    "nt_xent_loss",
    "simsiam_loss",
    "sinkhorn_knopp",
    "supcon_loss",
    "swav_loss",
    "vicreg_loss",
]
