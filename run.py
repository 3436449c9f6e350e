"""Entry point: `python run.py model=llama2_7b budget=0.5 calib=256`, `python run.py -m calib=64,128`
(the same app as the `stat-exp` console script: stat_exp/cli.py)."""
from stat_exp.cli import main

if __name__ == "__main__":
    main()
