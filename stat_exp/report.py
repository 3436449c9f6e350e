"""Collect finished runs from their local result files (results.jsonl; no W&B account needed) into a results
folder and regenerate its figures:

- ``runs.csv``: tidy, one row per run × budget × metric (columns run, model, task, method, budget, seed,
  calib, flops_ratio, params_ratio, metric, value);
- ``table.md``: per task, the headline metric by method × budget, mean ± std over seeds (achieved FLOPs);
- ``curve.png`` (one task) or ``curve_<task>.png``: one line per method, error bars over seeds;
- ``by_<key>.png`` with ``--by calib``: the metric against that column, one line per method and budget;
- ``best.md`` with ``--best-of attn_units``: each method at its better value of that column per budget.

    python -m stat_exp.report OUT_DIR RUN_DIR [RUN_DIR ...] [--metric auto|ppl_wikitext2|...] [--by calib]
                              [--pool calib,...] [--methods stat,kwon,flap] [--best-of attn_units]

Runs with different protocols (calib, seqlen, windows, eval split...) are split, never averaged, unless pooled.

``--metric auto`` uses each row's own headline metric (its task's), so one call covers several tasks.
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from .tracking import plot_lines, read_rows

METRIC_PREFIXES = ("ppl_", "accuracy_", "f1_", "exact_", "matthews_", "pearson_", "spearman_", "cos_")
ID_COLS = ("run", "model", "task", "method", "budget", "seed", "calib", "flops_ratio", "params_ratio")
EXTRA = ("latency_ms", "speedup", "calibrate_s", "prune_s")


def collect(run_dirs: list[str]) -> list[dict]:
    rows = []
    for d in run_dirs:
        for p in sorted(Path(d).rglob("results.jsonl")):
            rows += [{**r, "run": str(p.parent)} for r in read_rows(p)]
    return rows


def tidy(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        for k, v in r.items():
            if (k.startswith(METRIC_PREFIXES) or k in EXTRA) and isinstance(v, (int, float)):
                out.append({**{c: r.get(c) for c in ID_COLS}, "metric": k, "value": v})
    return out


def _headline(r: dict, metric: str) -> str:
    if metric != "auto":
        return metric
    return r.get("metric") or next(k for k in r if k.startswith(METRIC_PREFIXES))


def _stats(vals: list[float]) -> tuple[float, float]:
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _fmt(metric: str) -> str:
    return "{:.4f}" if metric.startswith(("cos", "accuracy", "f1_", "matthews", "pearson", "spearman")) else "{:.2f}"


PROTOCOL = ("model", "calib", "calib_data", "seqlen", "eval_split", "budget_kind", "latency_shape", "bos", "attn_units",
            "dtype")
CALIBRATION_ONLY = ("calib", "calib_data", "attn_units")  # keys that do not change the dense model's row


def varying(rows: list[dict]) -> list[str]:
    """The protocol keys (and ``windows_*``) whose values differ between rows of the same task and method."""
    keys = [*PROTOCOL, *sorted({k for r in rows for k in r if k.startswith("windows_")})]
    out = []
    for k in keys:
        groups: dict = {}
        for r in rows:
            groups.setdefault((r.get("task"), r["method"]), set()).add(str(r.get(k)))
        if any(len(v) > 1 for v in groups.values()):
            out.append(k)
    return out


def _label(r: dict, by: list[str]) -> str:
    """The table line a row belongs to: its method, and the values of the ``by`` keys that apply to it."""
    keys = [k for k in by if not (r["method"] == "dense" and k in CALIBRATION_ONLY)]
    return " ".join([r["method"], *(f"{k}={r.get(k)}" for k in keys)])


def table(rows: list[dict], metric: str, fmt: str | None = None, by: str | list[str] | None = None) -> str:
    """Markdown: per task, metric by method × budget; mean ± std over seeds when there are several. ``by``:
    keys that split a method into one line per value (e.g. calib); the dense row is split only by keys that
    change it (not the calibration's)."""
    by = [by] if isinstance(by, str) else list(by or [])
    rows = sorted(rows, key=lambda r: tuple(str(r.get(k)) for k in by))
    parts = []
    for task in dict.fromkeys(r.get("task") for r in rows):
        rt = [r for r in rows if r.get("task") == task]
        m = _headline(rt[0], metric)
        f = fmt or _fmt(m)
        methods = list(dict.fromkeys(_label(r, by) for r in rt if r["method"] != "dense"))
        budgets = sorted({r["budget"] for r in rt if r["method"] != "dense"}, reverse=True)
        lines = [f"### {task}: {m}\n", "| method | " + " | ".join(f"{b:g}" for b in budgets) + " |",
                 "|" + "---|" * (len(budgets) + 1)]

        def cell(rs):
            vals = [r[m] for r in rs if r.get(m) is not None]
            if not vals:
                return ""
            mu, sd = _stats(vals)
            s = f.format(mu) + (f" ± {f.format(sd)}" if len(vals) > 1 else "")
            fr = statistics.fmean(r["flops_ratio"] for r in rs)
            return s + (f" ({fr:.3f})" if rs[0]["method"] != "dense" else "")

        for lab in dict.fromkeys(_label(r, by) for r in rt if r["method"] == "dense"):
            # one dense value per seed (a rerun may have logged it again); same for every budget column
            by_seed = {r.get("seed"): r for r in rt if r["method"] == "dense" and _label(r, by) == lab}
            lines.append(f"| {lab} | " + " | ".join(cell(list(by_seed.values())) for _ in budgets) + " |")
        for meth in methods:
            lines.append(f"| {meth} | " + " | ".join(
                cell([r for r in rt if _label(r, by) == meth and r["budget"] == b]) for b in budgets) + " |")
        seeds = sorted({r.get("seed") for r in rt}, key=str)
        parts.append("\n".join(lines) + f"\n\n{m} at each budget (achieved fraction of prunable FLOPs kept in "
                     f"brackets); seeds {seeds}" + (", mean ± std over them" if len(seeds) > 1 else "") + ".\n")
    return "\n".join(parts)


def best_of(rows: list[dict], metric: str, key: str) -> str:
    """Markdown: per task, each method at its better ``key`` value per budget (e.g. ``attn_units``: the better unit
    granularity), the seed mean compared (perplexity: lowest; other metrics: highest); the winning value in
    brackets with the achieved FLOPs, so a comparison shows every baseline at its best."""
    parts = []
    for task in dict.fromkeys(r.get("task") for r in rows):
        rt = [r for r in rows if r.get("task") == task]
        m = _headline(rt[0], metric)
        f, lower = _fmt(m), m.startswith("ppl")
        budgets = sorted({r["budget"] for r in rt if r["method"] != "dense"}, reverse=True)
        lines = [f"### {task}: {m}, each method at its better {key}\n",
                 "| method | " + " | ".join(f"{b:g}" for b in budgets) + " |", "|" + "---|" * (len(budgets) + 1)]
        dense = [r[m] for r in rt if r["method"] == "dense" and r.get(m) is not None]
        if dense:
            lines.append("| dense | " + " | ".join(f.format(statistics.fmean(dense)) for _ in budgets) + " |")
        for meth in dict.fromkeys(r["method"] for r in rt if r["method"] != "dense"):
            cells = []
            for b in budgets:
                opts = {}
                for r in rt:
                    if r["method"] == meth and r["budget"] == b and r.get(m) is not None:
                        opts.setdefault(r.get(key), []).append(r)
                if not opts:
                    cells.append("")
                    continue
                pick = (min if lower else max)(opts, key=lambda v: statistics.fmean(r[m] for r in opts[v]))
                rs = opts[pick]
                cells.append(f"{f.format(statistics.fmean(r[m] for r in rs))} ({pick}, "
                             f"{statistics.fmean(r['flops_ratio'] for r in rs):.3f})")
            lines.append(f"| {meth} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + f"\n\n{m} (mean over seeds) at each budget for the {key} that scores "
                     "better; its value and the achieved fraction of prunable FLOPs kept in brackets.\n")
    return "\n".join(parts)


def plot(path: Path, rows: list[dict], metric: str, by: list[str] | None = None) -> None:
    """One line per method (and per value of the ``by`` keys, as in the table): mean metric vs mean FLOPs kept
    per budget, error bars = std over seeds."""
    m, by = _headline(rows[0], metric), list(by or [])
    lines = {}
    for meth in dict.fromkeys(_label(r, by) for r in rows if r["method"] != "dense"):
        xs, ys, es = [], [], []
        mine = [r for r in rows if r["method"] != "dense" and _label(r, by) == meth]
        for b in sorted({r["budget"] for r in mine}):
            rs = [r for r in mine if r["budget"] == b and r.get(m) is not None]
            if rs:
                mu, sd = _stats([r[m] for r in rs])
                xs.append(statistics.fmean(r["flops_ratio"] for r in rs))
                ys.append(mu)
                es.append(sd)
        lines[meth] = (xs, ys, es)
    dense = [r[m] for r in rows if r["method"] == "dense" and r.get(m) is not None]
    plot_lines(path, lines, m, "fraction of prunable FLOPs kept", statistics.fmean(dense) if dense else None,
               title=str(rows[0].get("task")))


def _plot_by(out: Path, rows: list[dict], metric: str, by: str) -> None:
    m = _headline(rows[0], metric)
    lines = {}
    for (meth, b) in dict.fromkeys((r["method"], r["budget"]) for r in rows if r["method"] != "dense"):
        rs = [r for r in rows if r["method"] == meth and r["budget"] == b and r.get(m) is not None]
        keys = sorted({r[by] for r in rs})
        stats = [_stats([r[m] for r in rs if r[by] == k]) for k in keys]
        lines[f"{meth} @ {b:g}"] = (keys, [s[0] for s in stats], [s[1] for s in stats])
    plot_lines(out / f"by_{by}.png", lines, m, by, log2x=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m stat_exp.report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Collect finished runs (their results.jsonl) into OUT: runs.csv (tidy), table.md and figures.",
        epilog="Runs whose protocol differs (calib, seqlen, evaluation windows, eval split, ...) are never averaged "
               "together: each such key splits a method into one line per value, unless --pool names it. Seeds are "
               "always pooled (mean ± std). The table says what it split and pooled.")
    ap.add_argument("out", help="output folder (created)")
    ap.add_argument("runs", nargs="+", help="run or sweep directories; every results.jsonl below them is read")
    ap.add_argument("--metric", default="auto", help="a metric column, or auto = each task's headline metric")
    ap.add_argument("--by", default=None, help="also plot the metric against this column (e.g. calib): by_<col>.png")
    ap.add_argument("--pool", default="", help="comma-separated protocol keys to average over instead of splitting")
    ap.add_argument("--methods", default=None, help="comma-separated methods to keep (dense is always kept)")
    ap.add_argument("--best-of", default=None, help="also write best.md: each method at its better value of this "
                    "column per budget (e.g. attn_units)")
    a = ap.parse_args(argv)
    rows = collect(a.runs)
    if a.methods:
        keep = {"dense", *a.methods.split(",")}
        rows = [r for r in rows if r["method"] in keep]
    if not rows:
        raise SystemExit(f"error: no results.jsonl under {' '.join(a.runs)}; pass the run or sweep directories")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*ID_COLS, "metric", "value"])
        w.writeheader()
        w.writerows(tidy(rows))
    pooled = [k for k in a.pool.split(",") if k]
    split = [k for k in dict.fromkeys(([a.by] if a.by else []) + varying(rows)) if k not in pooled]
    note = (f"Split by {', '.join(split)}" if split else "Nothing split") + \
        (f"; pooled over {', '.join(pooled)} (--pool)." if pooled else ".") + "\n\n"
    (out / "table.md").write_text(note + table(rows, a.metric, by=split))
    tasks = list(dict.fromkeys(r.get("task") for r in rows))
    for t in tasks:
        plot(out / ("curve.png" if len(tasks) == 1 else f"curve_{t}.png"), [r for r in rows if r.get("task") == t],
             a.metric, split)
    if a.by:
        _plot_by(out, rows, a.metric, a.by)
    if a.best_of:
        (out / "best.md").write_text(best_of(rows, a.metric, a.best_of))
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
