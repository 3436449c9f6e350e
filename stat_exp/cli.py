"""The command line: ``python run.py …`` and the ``stat-exp …`` console script are this one Hydra app
(``conf/`` beside the package). Bad input ends in one ``error:`` line and exit code 2."""
import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import check_overrides
from .errors import UserError
from .pipeline import run_experiment

CONF = Path(__file__).resolve().parents[1] / "conf"


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


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def _app(cfg: DictConfig) -> None:
    try:
        run_experiment(cfg)
    except UserError as e:
        discard_run_dir()
        fail(e)


def main() -> None:
    """Check the overrides (one-line errors), then run the Hydra app on ``sys.argv``."""
    if not CONF.is_dir():
        fail(UserError(f"no config directory at {CONF}; install stat-exp from its source tree (pip install -e .)"))
    try:
        check_overrides(sys.argv[1:], CONF)
    except UserError as e:
        fail(e)
    _app()
