"""The first-run commands, before (an older commit, in a git worktree) and after (this tree): what each prints
(stderr's last lines), its exit code and wall seconds, as a Markdown table.

    python sweeps/first_run_before_after.py BEFORE_COMMIT > results/first_run_before_after.md

Run it alone (timings); it needs the project's venv, the data directory and git."""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = "model=tiny_llama debug=fast logger=none"
LOAD = ("from transformers import AutoModelForCausalLM as A; import sys; "
        "m = A.from_pretrained(sys.argv[1], trust_remote_code=True); print(type(m).__name__, 'loaded')")


def commands(tmp: Path) -> list[tuple[str, list[str]]]:
    py = sys.executable
    return [
        ("budget=1.5", [py, "run.py", "budget=1.5"]),
        ("model=nope", [py, "run.py", "model=nope"]),
        ("method=nope", [py, "run.py", "method=nope"]),
        ("budgte=0.5", [py, "run.py", "budgte=0.5"]),
        ("calib=100000", [py, "run.py", *TINY.split(), "calib=100000", f"hydra.run.dir={tmp}/calib"]),
        ("bench --help", [py, "-m", "stat_exp.bench", "--help"]),
        ("bench shape=nope", [py, "-m", "stat_exp.bench", "shape=nope"]),
        ("bench budget=abc", [py, "-m", "stat_exp.bench", "budget=abc"]),
        ("report --help", [py, "-m", "stat_exp.report", "--help"]),
        ("save a pruned model", [py, "run.py", *TINY.split(), "budget=0.5", "save_model=true",
                                 f"hydra.run.dir={tmp}/save"]),
        ("load it, no stat_exp import", [py, "-c", LOAD, f"{tmp}/save/pruned_stat_0.5"]),
    ]


def run(tree: Path, name: str, cmd: list[str], tmp: Path) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               STAT_EXP_DATA=str(ROOT / "data"), STAT_EXP_CACHE=str(tmp / "cache"), HF_MODULES_CACHE=str(tmp / "m"))
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    s = time.perf_counter() - t
    out = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip() and "it/s]" not in ln]
    left = " ".join(p.name for p in (tmp / "calib").glob("*")) if name == "calib=100000" else ""
    shown = " ⏎ ".join(out[-2:])[:300].replace("|", "\\|")
    return f"{len(out)} lines, last: `{shown}`" + (f"; left in run dir: `{left or 'nothing'}`" if name == "calib=100000" else "") + f" | {r.returncode} | {s:.1f}"


def main(before: str) -> None:
    print(f"| command | before ({before[:7]}): output | rc | s | after ({_head()}): output | rc | s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        old = Path(d) / "old"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), before], cwd=ROOT, check=True)
        try:
            rows = {}
            for tree, tag in ((old, "before"), (ROOT, "after")):
                tmp = Path(d) / tag
                tmp.mkdir()
                for name, cmd in commands(tmp):
                    rows.setdefault(name, []).append(run(tree, name, cmd, tmp))
            for name, (a, b) in rows.items():
                print(f"| `{name}` | {a} | {b} |")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main(sys.argv[1])
