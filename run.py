"""Entry point: `python run.py model=llama2_7b budget=0.5 calib=256`, `python run.py -m calib=64,128`."""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stat_exp.config import check_overrides
from stat_exp.errors import UserError
from stat_exp.pipeline import run_experiment

CONF = Path(__file__).resolve().parent / "conf"


def fail(e: UserError) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_experiment(cfg)
    except UserError as e:
        fail(e)


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:], CONF)
    except UserError as e:
        fail(e)
    main()
