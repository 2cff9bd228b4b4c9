"""Names of the environment variables runner reads or sets, in one place.

Values pass between processes this way: a sweep and its launcher jobs, a plain
multirun and its jobs, a test and the process it starts.
"""

# A plain multirun's parent MLflow run (runner.callbacks.ParentRunCallback -> each job).
PARENT_RUN_ID = "RUNNER_PARENT_RUN_ID"
# A tracking URI that answered in this process tree: outages of it are ridden out.
TRACKER_REACHED = "RUNNER_TRACKER_REACHED"

# A trial run by a Hydra launcher job (set through hydra.job.env_set by the sweeper).
OPTUNA_TRIAL_NUMBER = "RUNNER_OPTUNA_TRIAL_NUMBER"
OPTUNA_STUDY = "RUNNER_OPTUNA_STUDY"
OPTUNA_STORAGE = "RUNNER_OPTUNA_STORAGE"
OPTUNA_REPORT_EVERY = "RUNNER_OPTUNA_REPORT_EVERY"
OPTUNA_METRICS = "RUNNER_OPTUNA_METRICS"
OPTUNA_MODEL_DIR = "RUNNER_OPTUNA_MODEL_DIR"
# The artifact of the parent run keeping the trials' base config (runner.base_config tag).
OPTUNA_BASE_CONFIG = "RUNNER_OPTUNA_BASE_CONFIG"
OPTUNA_HALVING = "RUNNER_OPTUNA_HALVING"  # "min_fraction,reduction_factor": trials train in rungs

# A database password for hydra.sweeper.storage, as ${oc.env:RUNNER_STORAGE_PASSWORD}.
STORAGE_PASSWORD = "RUNNER_STORAGE_PASSWORD"

# Test hooks (runner/testhooks.py); unset in normal use.
TEST_KILL_AT = "RUNNER_TEST_KILL_AT"
TEST_BARRIER = "RUNNER_TEST_BARRIER"
