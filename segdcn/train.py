"""segdcn-train (also `python -m segdcn.train`): train a DeepLab with deformable layers.

    segdcn-train dataset=synthetic dataset.root=data/synthetic model=deeplab_r18 trainer.max_iters=2000
    segdcn-train -m model=deeplab_r101 dataset=voc_aug model.dcn.layers=0,1,2,3,6     # the paper's ablation
    torchrun --nproc_per_node=4 -m segdcn.train trainer.batch_size=16 ...              # DistributedDataParallel
    segdcn-train hydra.run.dir=<run dir> trainer.resume=auto                           # continue a killed run

The run directory (Hydra's: outputs/<date>/<time>, multirun/<date>/<time>/<job> under -m) gets
config.yaml, metrics.jsonl, summary.json and checkpoints/{last,best}.pt. main() returns the final
mIoU, which Hydra's sweepers optimise.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import segdcn.config  # noqa: F401 - registers the structured-config schemas before Hydra composes


def use_the_platforms_start_method() -> None:
    """Under hydra-joblib-launcher a job runs in a loky worker, whose default multiprocessing start method
    is loky's own; DataLoader workers started with it fail to pickle (joblib issue 1104). Jobs start their
    data workers the platform's way instead."""
    import multiprocessing
    import sys

    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method("fork" if sys.platform == "linux" else "spawn", force=True)


@hydra.main(config_path=segdcn.config.CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from segdcn.engine.trainer import Trainer  # torch and the models load after Hydra has parsed the CLI

    use_the_platforms_start_method()
    run_dir = HydraConfig.get().runtime.output_dir
    return Trainer(cfg, run_dir).fit()


if __name__ == "__main__":
    main()
