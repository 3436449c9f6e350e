"""Studies: a results folder per question (``results/<model>/<study>/``) holding its rows (``results.jsonl``),
its recipe (``study.json``: title, question, answer, protocol, command, report options) and what this module
makes from them; and the index ``results/README.md`` made from every study.

    python -m stat_exp.report                      # regenerate every study's tables, figures, README, and the index
    python -m stat_exp.report OUT_DIR RUN_DIR [RUN_DIR ...] [options]   # collect runs into the study OUT_DIR

Collecting reads every results.jsonl below the run directories (no W&B account needed), stores the rows and the
options in OUT_DIR, and writes:

- ``runs.csv``: tidy, one row per run × budget × metric (columns run, model, task, method, budget, seed,
  calib, flops_ratio, params_ratio, metric, value);
- ``table.md``: per task, the headline metric by method × budget, mean ± std over seeds (achieved FLOPs);
- ``curve.png`` (one task) or ``curve_<task>.png``: one line per method, error bars over seeds;
- ``by_<key>.png`` with ``--by calib``: the metric against that column, one line per method and budget;
- ``best.md`` with ``--best-of attn_units``: each method at its better value of that column per budget;
- ``README.md``: the study's question and answer (from ``study.json``), protocol and command.

    python -m stat_exp.report OUT_DIR RUN_DIR [RUN_DIR ...] [--metric auto|ppl_wikitext2|...] [--by calib]
                              [--pool calib,...] [--methods stat,kwon,flap] [--best-of attn_units]

Runs with different protocols (calib, seqlen, windows, eval split...) are split, never averaged, unless pooled.

``--metric auto`` uses each row's own headline metric (its task's), so one call covers several tasks.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from .tracking import plot_lines, read_rows

METRIC_PREFIXES = ("ppl_", "accuracy_", "f1_", "exact_", "matthews_", "pearson_", "spearman_", "cos_")
ID_COLS = ("run", "model", "task", "method", "budget", "seed", "calib", "flops_ratio", "params_ratio")
EXTRA = ("latency_ms", "speedup", "calibrate_s", "prune_s")


def row_key(r: dict) -> tuple:
    """What makes a row one result: its run, method, budget and seed."""
    return r.get("run"), r["method"], r["budget"], r.get("seed")


def collect(run_dirs: list[str]) -> list[dict]:
    """Every row below ``run_dirs``, named by the run directory it came from; a study folder passed as a source
    keeps its rows' own run names, and a row met twice (two studies holding the same run) is kept once."""
    rows, seen = [], set()
    for d in run_dirs:
        for p in sorted(Path(d).rglob("results.jsonl")):
            for r in read_rows(p):
                r = {"run": str(p.parent), **r}
                if row_key(r) not in seen:
                    seen.add(row_key(r))
                    rows.append(r)
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
            "dtype", "quant", "sketch", "sketch_dim", "keep_from", "correction", "ridge", "propagate", "target", "reselect",
            "order", "normalize", "choose_from", "choose_on", "choose_ridge")
CALIBRATION_ONLY = ("calib", "calib_data", "attn_units", "sketch", "sketch_dim", "keep_from", "correction", "ridge",
                    "propagate", "target", "reselect", "order", "normalize", "choose_from",
                    "choose_on", "choose_ridge")  # keys that do not change the dense model's row


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
    """The table line a row belongs to: its method, and the values of the ``by`` keys that apply to it (a key the
    row does not set, i.e. left at its default, is left out: ``stat ridge=0.01`` beside plain ``stat``)."""
    keys = [k for k in by if not (r["method"] == "dense" and k in CALIBRATION_ONLY) and r.get(k) is not None]
    return " ".join([r["method"], *(f"{k}={r.get(k)}" for k in keys)])


def _order(v) -> tuple:
    """Sort key for a split key's values: numbers by value (calib 8 before 16 before 128), then the rest as text."""
    num = isinstance(v, (int, float)) and not isinstance(v, bool)
    return (0, v, "") if num else (1, 0, str(v))


def table(rows: list[dict], metric: str, fmt: str | None = None, by: str | list[str] | None = None) -> str:
    """Markdown: per task, metric by method × budget; mean ± std over seeds when there are several. ``by``:
    keys that split a method into one line per value (e.g. calib); the dense row is split only by keys that
    change it (not the calibration's)."""
    by = [by] if isinstance(by, str) else list(by or [])
    rows = sorted(rows, key=lambda r: tuple(_order(r.get(k)) for k in by))
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


def best_of(rows: list[dict], metric: str, key: str, by: list[str] | None = None) -> str:
    """Markdown: per task, each method at its better ``key`` value per budget (e.g. ``attn_units``: the better unit
    granularity), the seed mean compared (perplexity: lowest; other metrics: highest); the winning value in
    brackets with the achieved FLOPs, so a comparison shows every baseline at its best. ``by``: the other keys that
    split a method into lines (as in the table: ``stat normalize=median`` is never averaged into ``stat``)."""
    by = [k for k in (by or []) if k != key]
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
        for meth in dict.fromkeys(_label(r, by) for r in rt if r["method"] != "dense"):
            cells = []
            for b in budgets:
                opts = {}
                for r in rt:
                    if r["method"] != "dense" and _label(r, by) == meth and r["budget"] == b and r.get(m) is not None:
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


def plot(path: Path, rows: list[dict], metric: str, by: list[str] | None = None, caption: str | None = None) -> None:
    """One line per method (and per value of the ``by`` keys, as in the table): mean metric vs mean FLOPs kept
    per budget, error bars = std over seeds; dense as a horizontal line; the FLOPs axis reversed (as in the
    papers: pruning harder to the right); ``caption`` (units and protocol) under the axes."""
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
               title=str(rows[0].get("task")), reverse_x=True, dense_line=True, caption=caption)


def _plot_by(out: Path, rows: list[dict], metric: str, by: str) -> None:
    m = _headline(rows[0], metric)
    lines = {}
    for (meth, b) in dict.fromkeys((r["method"], r["budget"]) for r in rows if r["method"] != "dense"):
        rs = [r for r in rows if r["method"] == meth and r["budget"] == b and r.get(m) is not None]
        keys = sorted({r[by] for r in rs})
        stats = [_stats([r[m] for r in rs if r[by] == k]) for k in keys]
        lines[f"{meth} @ {b:g}"] = (keys, [s[0] for s in stats], [s[1] for s in stats])
    plot_lines(out / f"by_{by}.png", lines, m, by, log2x=True)


def _kept(rows: list[dict], methods: str | list | None) -> list[dict]:
    if not methods:
        return rows
    keep = {"dense", *(methods.split(",") if isinstance(methods, str) else methods)}
    return [r for r in rows if r["method"] in keep]


def _split(rows: list[dict], opts: dict) -> tuple[list[str], str]:
    """The keys that split a method into lines (``--by`` and the varying protocol keys, less ``--pool``), and the
    table's first line saying so."""
    pooled = list(opts.get("pool") or [])
    split = [k for k in dict.fromkeys(([opts["by"]] if opts.get("by") else []) + varying(rows)) if k not in pooled]
    note = (f"Split by {', '.join(split)}" if split else "Nothing split") + \
        (f"; pooled over {', '.join(pooled)} (--pool)." if pooled else ".") + "\n\n"
    return split, note


def render(spec: dict, rows: list[dict]) -> dict[str, str]:
    """The text files of a study from its recipe ``spec`` and ``rows``: table.md, best.md (with best_of), README.md."""
    opts = spec.get("report") or {}
    out = {"README.md": study_readme(spec)}
    if not rows:
        return out
    rows = _kept(rows, opts.get("methods"))
    metric = opts.get("metric") or "auto"
    split, note = _split(rows, opts)
    out["table.md"] = note + table(rows, metric, by=split)
    if opts.get("best_of"):
        out["best.md"] = best_of(rows, metric, opts["best_of"], split)
    if opts.get("columns"):
        out["details.md"] = details(rows, metric, opts["columns"], split)
    if opts.get("times"):
        out["times.md"] = times(rows)
    return out


def times(rows: list[dict]) -> str:
    """Markdown: per task, each method's cost in seconds, mean over its runs (seeds): calibration (``calibrate_s``,
    paid once per run whatever the number of budgets) and pruning at one budget (``prune_s``, mean over budgets),
    and the two together for every budget of the table."""
    parts = []
    for task in dict.fromkeys(r.get("task") for r in rows):
        rt = [r for r in rows if r.get("task") == task and r["method"] != "dense"]
        nb = len({r["budget"] for r in rt})
        lines = [f"### {task}: seconds per run\n", f"| method | calibration (once) | pruning (per budget) | "
                 f"total for {nb} budgets |", "|---|---|---|---|"]
        for meth in dict.fromkeys(r["method"] for r in rt):
            rm = [r for r in rt if r["method"] == meth]
            cal = {r.get("run", ""): r.get("calibrate_s") for r in rm if r.get("calibrate_s") is not None}
            pr = [r["prune_s"] for r in rm if r.get("prune_s") is not None]
            if not cal and not pr:
                continue
            c = statistics.fmean(cal.values()) if cal else 0.0
            p = statistics.fmean(pr) if pr else 0.0
            lines.append(f"| {meth} | {c:.1f} | {p:.2f} | {c + nb * p:.1f} |")
        parts.append("\n".join(lines) + f"\n\nSeconds on the machine that made the rows, mean over "
                     f"{len({r.get('run') for r in rt})} run(s); a run computes its statistics once for all its budgets.\n")
    return "\n".join(parts)


def details(rows: list[dict], metric: str, columns: list[str], by: list[str]) -> str:
    """Markdown: one line per pruned row (its method and split keys, budget), the metric and ``columns``."""
    m = _headline(rows[0], metric)
    num = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = ["| run | budget | " + " | ".join([m, *columns]) + " |", "|" + "---|" * (len(columns) + 3)]
    for r in rows:
        if r["method"] != "dense":
            lines.append(f"| {_label(r, by)} | {r['budget']:g} | " + " | ".join(num(r.get(c)) for c in [m, *columns]) + " |")
    dense = [r for r in rows if r["method"] == "dense" and r.get(m) is not None][:1]
    tail = f"\n\nDense: {m} = {num(dense[0][m])}.\n" if dense else "\n"
    return "\n".join(lines) + tail


def study_readme(spec: dict) -> str:
    lines = [f"# {spec['title']}", "", f"**Question.** {spec['question']}", "", f"**Answer.** {spec['answer']}", ""]
    if spec.get("protocol"):
        lines += [f"Protocol: {spec['protocol']}", ""]
    if spec.get("command"):
        lines += [f"Command: `{spec['command']}`", ""]
    files = [f for f in spec.get("files", []) if f.endswith((".jsonl", ".md", ".png"))]
    if files:
        lines += ["Files: " + ", ".join(f"`{f}`" for f in files) + ". Regenerate: `python -m stat_exp.report`.", ""]
    return "\n".join(lines)


def draw(d: Path, spec: dict, rows: list[dict]) -> None:
    """The study's figures: curve.png (curve_<task>.png for several tasks) and by_<key>.png."""
    opts = spec.get("report") or {}
    rows = _kept(rows, opts.get("methods"))
    metric = opts.get("metric") or "auto"
    split, _ = _split(rows, opts)
    tasks = list(dict.fromkeys(r.get("task") for r in rows))
    caption = spec.get("protocol")
    for t in tasks:
        plot(d / ("curve.png" if len(tasks) == 1 else f"curve_{t}.png"), [r for r in rows if r.get("task") == t],
             metric, split, caption=caption)
    if opts.get("by"):
        _plot_by(d, rows, metric, opts["by"])
    if opts.get("xy"):
        _plot_xy(d, rows, metric, **opts["xy"])


def _plot_xy(d: Path, rows: list[dict], metric: str, x: str, line: str) -> None:
    """``<x>.png``: the metric against column ``x`` (e.g. the statistics stage's seconds), one line per value of
    ``line`` (e.g. the sketch), points in order of ``x``; the dense value as a horizontal line."""
    m = _headline(rows[0], metric)
    pts: dict = {}
    for r in rows:
        if r["method"] != "dense" and r.get(x) is not None and r.get(m) is not None:
            pts.setdefault(str(r.get(line)), []).append((r[x], r[m]))
    lines = {k: ([a for a, _ in sorted(v)], [b for _, b in sorted(v)], None) for k, v in pts.items()}
    dense = [r[m] for r in rows if r["method"] == "dense" and r.get(m) is not None]
    plot_lines(d / f"{x}.png", lines, m, x, statistics.fmean(dense) if dense else None, dense_line=True)


def write_study(d: Path, spec: dict, rows: list[dict], figures: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if rows:
        with open(d / "runs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*ID_COLS, "metric", "value"])
            w.writeheader()
            w.writerows(tidy(_kept(rows, (spec.get("report") or {}).get("methods"))))
    for name, text in render(spec, rows).items():
        (d / name).write_text(text)
    if figures and rows:
        draw(d, spec, rows)


def studies(root: Path) -> list[tuple[Path, dict, list[dict]]]:
    """Every study below ``root`` (a folder with study.json), in the index's order."""
    out = []
    for p in sorted(Path(root).rglob(SPEC)):
        spec = json.loads(p.read_text())
        out.append((p.parent, spec, read_rows(p.parent / "results.jsonl")))
    return sorted(out, key=lambda s: (SECTIONS.index(s[1].get("section", "study")), s[1].get("order", 99), str(s[0])))


SPEC = "study.json"
SECTIONS = ("headline", "comparison", "study", "superseded")
INTRO = """# Results

Every table and figure below is made from the rows in each study's `results.jsonl` by `python -m stat_exp.report`
(a test checks that the committed tables equal what it makes). Each study folder holds its rows, `study.json` (the
question, the protocol, the command that made it), `table.md`, its figure and a README. Machine: a 2-core CPU,
torch 2.13.0+cpu, offline; models from the PyPI packages of docs/models.md. Budget = fraction of the layers' FLOPs
kept at the evaluation length; achieved values in brackets. Baselines run as their authors released them
(docs/methods.md); rows of earlier implementations are labelled `<method>_old` and kept only in the studies that
measured them. The measurements' discussion, in the order they were made: [findings.md](findings.md); the cost of
each stage and the projection to 7B: [scale.md](scale.md); the family matrix: [families.md](families.md).
"""


def _rel(d: Path, root: Path) -> str:
    return d.relative_to(root).as_posix()


SCALE = """## Scale and the rest

- [scale.md](scale.md): this CPU's matmul floor and each stage's fraction of it, the 1.5B model's stages and memory,
  the projection of the headline command to an H100; [bench_smollm2_cpu.json](bench_smollm2_cpu.json) the benchmark's
  output.
- [llama2_7b_shape_rehearsal/](llama2_7b_shape_rehearsal/): the headline command on Llama-2-7B's shape with random
  weights on a 24 GB, 2-core host (exit 0, peak 22.9 GiB, the reloaded model reproduces its row).
- [durability_before_after.md](durability_before_after.md): kills mid-save and mid-walk, two jobs on one cache, NaN
  in the activations, before and after the defences.
- [families.md](families.md): the family × invariant matrix; [smollm2/model_card_stat_0.7.md](smollm2/model_card_stat_0.7.md):
  a saved model's card; [first_run_before_after.md](first_run_before_after.md): a new user's first commands, before
  and after the fixes they prompted.
"""


def index(root: Path, found: list) -> str:
    """results/README.md: the headline figure per model, the comparison tables with their protocol, the studies,
    the superseded rows, then scale."""
    parts = [INTRO]
    head = [(d, spec, rows) for d, spec, rows in found if spec.get("section") == "headline"]
    if head:
        parts.append("## Headline figures\n")
        for d, spec, _ in head:
            rel = _rel(d, root)
            figs = sorted(p.name for p in d.glob("curve*.png"))
            parts.append(f"**{spec['title']}.** {spec['question']} **{spec['answer']}**\n\n" +
                         " ".join(f"![{rel} {f}]({rel}/{f})" for f in figs) + "\n")
    tables = [(d, spec, rows) for d, spec, rows in found if spec.get("section") in ("headline", "comparison")]
    if tables:
        parts.append("## Comparison tables\n")
        for d, spec, rows in tables:
            rel = _rel(d, root)
            text = render(spec, rows)
            body = text.get("best.md") or text.get("table.md", "")
            parts.append(f"### {spec['title']}\n\nProtocol: {spec.get('protocol', '')} Command: "
                         f"`{spec.get('command', '')}`. Study: [{rel}/]({rel}/).\n\n" + body.replace("### ", "#### "))
    for sec, title in (("study", "Studies"), ("superseded", "Superseded rows (earlier baseline implementations)")):
        mine = [(d, spec) for d, spec, _ in found if spec.get("section", "study") == sec]
        if mine:
            lines = [f"## {title}\n", "| study | question | answer |", "|---|---|---|"]
            lines += [f"| [{_rel(d, root)}]({_rel(d, root)}/) | {spec['question']} | {spec['answer']} |" for d, spec in mine]
            parts.append("\n".join(lines) + "\n")
    if (Path(root) / "scale.md").exists():
        parts.append(SCALE)
    return "\n".join(parts)


def regenerate(root: Path, figures: bool = True) -> list[Path]:
    """Rebuild every study below ``root`` from its rows, then the index; returns the study folders."""
    found = studies(root)
    for d, spec, rows in found:
        write_study(d, spec, rows, figures)
    (Path(root) / "README.md").write_text(index(Path(root), studies(root)))
    return [d for d, _, _ in found]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m stat_exp.report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Without arguments: regenerate every study under --root (tables, figures, READMEs) and the "
                    "index. With OUT RUNS: collect finished runs (their results.jsonl) into the study OUT.",
        epilog="Runs whose protocol differs (calib, seqlen, evaluation windows, eval split, ...) are never averaged "
               "together: each such key splits a method into one line per value, unless --pool names it. Seeds are "
               "always pooled (mean ± std). The table says what it split and pooled.")
    ap.add_argument("out", nargs="?", help="the study folder to collect into (created)")
    ap.add_argument("runs", nargs="*", help="run or sweep directories; every results.jsonl below them is read")
    ap.add_argument("--root", default="results", help="the results folder regenerated without arguments")
    ap.add_argument("--metric", default="auto", help="a metric column, or auto = each task's headline metric")
    ap.add_argument("--by", default=None, help="also plot the metric against this column (e.g. calib): by_<col>.png")
    ap.add_argument("--pool", default="", help="comma-separated protocol keys to average over instead of splitting")
    ap.add_argument("--methods", default=None, help="comma-separated methods to keep (dense is always kept)")
    ap.add_argument("--columns", default=None, help="also write details.md: one line per pruned row with these "
                    "comma-separated columns (e.g. stage_statistics_s,max_rss_gb)")
    ap.add_argument("--xy", default=None, help="also plot the metric against a column, one line per value of another: "
                    "X:LINE (e.g. stage_statistics_s:sketch) -> X.png")
    ap.add_argument("--times", action="store_true", help="also write times.md: each method's calibration and "
                    "pruning seconds")
    ap.add_argument("--best-of", default=None, help="also write best.md: each method at its better value of this "
                    "column per budget (e.g. attn_units)")
    a = ap.parse_args(argv)
    if a.out is None:
        done = regenerate(Path(a.root))
        print(f"regenerated {len(done)} studies and {Path(a.root) / 'README.md'}")
        return
    if not a.runs:
        raise SystemExit("error: pass the run or sweep directories to collect after OUT (or no argument at all "
                         "to regenerate every study)")
    rows = collect(a.runs)
    if not _kept(rows, a.methods):
        raise SystemExit(f"error: no results.jsonl under {' '.join(a.runs)}; pass the run or sweep directories")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / SPEC
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {
        "title": out.name, "question": "(say what this study asks in study.json)", "answer": "(and what it found)",
        "section": "study"}
    spec["report"] = {"metric": a.metric, "by": a.by, "pool": [k for k in a.pool.split(",") if k],
                      "methods": a.methods, "best_of": a.best_of,
                      "xy": dict(zip(("x", "line"), a.xy.split(":"))) if a.xy else None,
                      "columns": a.columns.split(",") if a.columns else None, "times": a.times}
    fresh = {row_key(r) for r in rows}  # rows of other runs already in the study stay (a sweep run in parts)
    rows = [r for r in read_rows(out / "results.jsonl") if row_key(r) not in fresh] + rows
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_study(out, spec, rows)
    spec["files"] = [f for f in ("results.jsonl", "table.md", "best.md", "details.md", "times.md") if (out / f).exists()] + \
        sorted(p.name for p in out.glob("curve*.png")) + ([f"{spec['report']['xy']['x']}.png"] if a.xy else [])
    spec_path.write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(study_readme(spec))
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
