"""Run logging: local files (config.yaml, metrics.jsonl, summary.json) always, W&B when configured.

Named `loggers` so that it never shadows the standard library's `logging`.
"""

from .files import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from .keys import KEY_CONFIG, key_config
from .run_logger import NullLogger, RunLogger, build_logger

__all__ = [
    "CONFIG_FILE",
    "KEY_CONFIG",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "NullLogger",
    "RunLogger",
    "build_logger",
    "key_config",
]
