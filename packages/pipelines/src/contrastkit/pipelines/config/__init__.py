"""The pretrain (and joint training) configuration: one dataclass per YAML section, validated on
construction, read from YAML with `section.field=value` overrides, saved resolved as config.yaml.

sections.py holds the dataclasses, checks.py the field checks they run, yaml_io.py the dicts,
YAML files and overrides, early_checks.py what the command line checks before importing torch.
Method-specific defaults come from the method registry (`contrastkit.pipelines.methods`).
Importing this package loads no torch; building a config does (the method registry).
"""

from contrastkit.pipelines.config.early_checks import check_raw_config
from contrastkit.pipelines.config.sections import (
    DATASETS,
    DEFAULT_IMAGE_SIZE,
    IMIX_KINDS,
    LOADERS,
    LR_REFERENCE_BATCH,
    OPTIMIZER_NAMES,
    SECTIONS,
    DataConfig,
    JointConfig,
    JointTrainingConfig,
    MethodConfig,
    ModelConfig,
    OptimizerConfig,
    PretrainConfig,
    TrainConfig,
)
from contrastkit.pipelines.config.yaml_io import (
    apply_overrides,
    config_from_dict,
    config_sections,
    config_to_dict,
    config_to_yaml,
    load_config,
    parse_override,
    read_config_file,
    save_config,
)

__all__ = [
    "DATASETS",
    "DEFAULT_IMAGE_SIZE",
    "IMIX_KINDS",
    "LOADERS",
    "LR_REFERENCE_BATCH",
    "OPTIMIZER_NAMES",
    "SECTIONS",
    "DataConfig",
    "JointConfig",
    "JointTrainingConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "TrainConfig",
    "apply_overrides",
    "check_raw_config",
    "config_from_dict",
    "config_sections",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "parse_override",
    "read_config_file",
    "save_config",
]
