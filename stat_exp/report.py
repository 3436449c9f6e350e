"""Collect finished runs (their results.jsonl, no W&B account needed) into a results folder:
runs.csv (every row), table.md (metric by method × budget, with achieved FLOPs) and curve.png.

    python -m stat_exp.report OUT_DIR RUN_DIR [RUN_DIR ...] [--metric ppl_wikitext2]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from .tracking import read_rows, write_curve


def collect(run_dirs: list[str]) -> list[dict]:
    rows = []
    for d in run_dirs:
        for p in sorted(Path(d).rglob("results.jsonl")):
            rows += [{**r, "run": str(p.parent)} for r in read_rows(p)]
    return rows


def table(rows: list[dict], metric: str, fmt: str | None = None, by: str | None = None) -> str:
    fmt = fmt or ("{:.4f}" if metric.startswith("cos") else "{:.2f}")
    if by:  # one line per (method, value of `by`), e.g. calibration size
        rows = [{**r, "method": f"{r['method']} {by}={r.get(by)}"} for r in sorted(rows, key=lambda r: r.get(by) or 0)]
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"))
    budgets = sorted({r["budget"] for r in rows if r["method"] != "dense"}, reverse=True)
    dense = [r[metric] for r in rows if r["method"] == "dense" and r.get(metric) is not None]
    head = "| method | " + " | ".join(f"{b:g}" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (len(budgets) + 1)]
    if dense:
        lines.append("| dense | " + " | ".join(fmt.format(dense[0]) for _ in budgets) + " |")
    for m in methods:
        cells = []
        for b in budgets:
            rs = [r for r in rows if r["method"] == m and r["budget"] == b and r.get(metric) is not None]
            cells.append(fmt.format(sum(r[metric] for r in rs) / len(rs)) + f" ({rs[0]['flops_ratio']:.3f})"
                         if rs else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{metric} at each budget (achieved fraction of prunable FLOPs kept in brackets).\n"


def _plot_by(out: Path, rows: list[dict], metric: str, by: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for (m, b) in dict.fromkeys((r["method"], r["budget"]) for r in rows if r["method"] != "dense"):
        rs = sorted((r for r in rows if r["method"] == m and r["budget"] == b), key=lambda r: r[by])
        ax.plot([r[by] for r in rs], [r[metric] for r in rs], "o-", label=f"{m} @ {b:g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(by)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"by_{by}.png")
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--metric", default="ppl_wikitext2")
    ap.add_argument("--by", default=None, help="also tabulate and plot against this column (e.g. calib)")
    a = ap.parse_args(argv)
    rows = collect(a.runs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    (out / "table.md").write_text(table(rows, a.metric, by=a.by))
    write_curve(out, rows, a.metric)
    if a.by:
        _plot_by(out, rows, a.metric, a.by)
    (out / "curve.csv").unlink(missing_ok=True)  # runs.csv is the tidy source
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
