"""The run directory: the contract between training and everything that reads its results.

Its file names (:mod:`.layout`), its writers (:mod:`.write`), one validated reader for runs,
baselines and ensembles alike (:mod:`.read`), and the rebuilding of a trained fold
(:mod:`.fold`). The trainer writes through this package; the report, ensembles, export and
prediction read through it and never import the trainer.
"""

from e2evision.rundir.fold import LoadedFold, choose_fold, load_fold, load_fold_module, sha256_file
from e2evision.rundir.layout import (
    CHECKPOINT_DIR,
    CHECKPOINT_META_FILE,
    COMBINER_TRAIN_FILE,
    CONFIG_FILE,
    ENSEMBLE_FILE,
    FEATURES_FILE,
    FOLD_FILE,
    METRICS_FILE,
    NORMALIZER_FILE,
    PREDICTIONS_FILE,
    PREPROCESS_FILE,
    RUN_FILE,
    SALIENCY_FILE,
    WEIGHTS_FILE,
    RunDirError,
    config_diff,
    config_hash,
    fold_dir,
    fold_numbers,
    is_ensemble,
    read_json,
)
from e2evision.rundir.read import (
    REQUIRED_METRICS,
    REQUIRED_PREDICTIONS,
    RunRecord,
    check_predictions,
    read_finished_fold,
    read_metrics,
    read_predictions,
    read_run,
)
from e2evision.rundir.write import (
    jsonable,
    write_arrays,
    write_checkpoint_meta,
    write_config,
    write_fold,
    write_metrics,
    write_predictions,
    write_run_info,
)

__all__ = [
    "CHECKPOINT_DIR", "CHECKPOINT_META_FILE", "COMBINER_TRAIN_FILE", "CONFIG_FILE", "ENSEMBLE_FILE",
    "FEATURES_FILE", "FOLD_FILE", "METRICS_FILE", "NORMALIZER_FILE", "PREDICTIONS_FILE", "PREPROCESS_FILE",
    "REQUIRED_METRICS", "REQUIRED_PREDICTIONS", "RUN_FILE", "SALIENCY_FILE", "WEIGHTS_FILE", "LoadedFold",
    "RunDirError", "RunRecord", "check_predictions", "choose_fold", "config_diff", "config_hash", "fold_dir",
    "fold_numbers", "is_ensemble", "jsonable", "load_fold", "load_fold_module", "read_finished_fold",
    "read_json", "read_metrics", "read_predictions", "read_run", "sha256_file", "write_arrays",
    "write_checkpoint_meta", "write_config", "write_fold", "write_metrics", "write_predictions",
    "write_run_info",
]
