"""Entry point: `python run.py model=llama2_7b budget=0.5 calib=256`, `python run.py -m calib=64,128`."""
import shutil
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


def discard_run_dir() -> None:
    """A run refused for bad input leaves nothing behind: its Hydra files go, and the directory if then empty
    (a directory holding results or anything else of the user's is kept)."""
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    if (out / "results.jsonl").exists():
        return
    shutil.rmtree(out / ".hydra", ignore_errors=True)
    for log in out.glob("*.log"):
        log.unlink()
    if out.exists() and not any(out.iterdir()):
        out.rmdir()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_experiment(cfg)
    except UserError as e:
        discard_run_dir()
        fail(e)


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:], CONF)
    except UserError as e:
        fail(e)
    main()
