"""The name of every file and folder a run directory holds: the one place they are spelled.

A pretrain or joint run directory (`train.output_dir`):
    config.yaml, metrics.csv, curves.png, tensorboard/, checkpoint-{step}/ (and, for joint runs,
    history.csv, joint_curves.png, loss_terms.png, results.csv, report.md, model_summary.md), and
    .lock while a run is writing into it (who holds it: pid, host, start time, command).
A checkpoint folder: config.yaml, backbone.pt, meta.json, training_state.pt, rank_state-{r}.pt
(and classifier.pt for joint runs), and the probe's feature caches. A probe output folder:
results.csv, report.md, metrics.csv (its per-epoch history), probe_curves.png, tsne.png,
nn_grid.png, model_summary.md.
"""

from __future__ import annotations

# ---------------------------------------------------------------- run directory
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
HISTORY_FILE = "history.csv"
RESULTS_FILE = "results.csv"
REPORT_FILE = "report.md"
MODEL_SUMMARY_FILE = "model_summary.md"
JOINT_CURVES_FILE = "joint_curves.png"
LOSS_TERMS_FILE = "loss_terms.png"
LOCK_FILE = ".lock"  # flock-ed by the main process of the run writing here (training.run_lock)

# ---------------------------------------------------------------- checkpoint folders
CHECKPOINT_PREFIX = "checkpoint-"
TMP_CHECKPOINT_PREFIX = ".tmp-checkpoint-"
BACKBONE_FILE = "backbone.pt"
META_FILE = "meta.json"
STATE_FILE = "training_state.pt"
CLASSIFIER_FILE = "classifier.pt"


def checkpoint_dir_name(step: int) -> str:
    """`checkpoint-{step}`: the folder of the checkpoint written after optimizer step `step`."""
    return f"{CHECKPOINT_PREFIX}{step}"


def rank_state_file(rank: int) -> str:
    """`rank_state-{rank}.pt`: one process's RNG and running-sums state in a checkpoint folder."""
    return f"rank_state-{rank}.pt"


# ---------------------------------------------------------------- probe output folder
PROBE_CURVES_FILE = "probe_curves.png"
TSNE_FILE = "tsne.png"
NN_GRID_FILE = "nn_grid.png"
FINETUNED_FILE = "finetuned.pt"  # backbone + head after --finetune (classifier.pt otherwise)
COMPARE_FILE = "compare.png"  # compare's default figure


def probe_dir_name(dataset: str) -> str:
    """`probe-<dataset>`: the probe's default output folder inside the pretrain run directory."""
    return f"probe-{dataset}"


def feature_cache_file(dataset: str, split: str, subset: int | None, seed: int) -> str:
    """`features-<dataset>-<split>[-n<subset>-s<seed>].pt`: the probe's cache of one split's features."""
    suffix = f"-n{subset}-s{seed}" if subset is not None else ""
    return f"features-{dataset}-{split}{suffix}.pt"
