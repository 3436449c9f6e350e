"""Result sinks. Always: results.jsonl (one durable line per row), curve.csv and curve.png in the run's
output directory. Optionally W&B (offline unless the user opts in; never a prompt or a hang)."""
from __future__ import annotations

import csv
import json
import logging
import os
import textwrap
from pathlib import Path

from . import files

log = logging.getLogger(__name__)


def read_rows(path: Path) -> list[dict]:
    """Rows of a results.jsonl; a torn last line (killed mid-write) is ignored."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def summary(out: Path) -> str:
    """The end-of-run table (method × budget × metric × FLOPs kept × params kept, and the quantization with the
    weights' MB when the run quantized; from results.jsonl) and the paths of the run's results and curve."""
    rows = sorted(read_rows(Path(out) / "results.jsonl"), key=lambda r: (r["method"] != "dense", r["method"],
                                                                            -r["budget"]))
    metric = rows[0]["metric"] if rows else "metric"
    head = ["method", "budget", metric, "flops kept", "params kept"]
    cells = [[r["method"], f"{r['budget']:.2f}", f"{r.get(metric, float('nan')):.4g}", f"{r['flops_ratio']:.3f}",
              f"{r['params_ratio']:.3f}"] for r in rows]
    if any(r.get("quant", "none") != "none" for r in rows):
        head += ["quant", "weights MB"]
        for c, r in zip(cells, rows):
            c += [r.get("quant", "none"), f"{r.get('weight_bytes', float('nan')) / 1e6:.1f}"]
    width = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, width)))
             for row in [head, *cells]]
    out = Path(out).resolve()
    return "\n".join([*lines, f"results: {out / 'results.jsonl'}", f"curve:   {out / 'curve.png'}"])


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a partial last line: cut it so the next row starts clean."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


class Tracker:
    """Sinks of one run. As a context manager it writes the curve on exit and closes W&B, marking the W&B run
    failed (exit code 1) when the block raised."""

    def __init__(self, out_dir: str | Path, config: dict, wandb_cfg: dict | None, name: str = "run",
                 group: str | None = None, metric: str | None = None):
        self.out, self.metric = Path(out_dir), metric
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "results.jsonl"
        _drop_torn_tail(self.path)
        self.run = None
        if wandb_cfg and wandb_cfg.get("mode", "disabled") != "disabled":
            self.run = _wandb_init(wandb_cfg, config, self.out, name, group)

    def log(self, row: dict) -> None:
        """Append ``row`` atomically (the file rewritten beside and renamed: a kill leaves the old rows or the
        new ones); a row of the same method and budget already there (one whose save was redone) is replaced."""
        same = lambda r: (r.get("method"), r.get("budget")) == (row.get("method"), row.get("budget"))  # noqa: E731
        kept = [json.dumps(r) for r in read_rows(self.path) if not same(r)]
        files.write_text_atomic(self.path, "".join(line + "\n" for line in [*kept, json.dumps(row)]))
        if self.run is not None:  # strings too (method, task), so W&B's own charts can group by them
            self.run.log({k: v for k, v in row.items() if isinstance(v, (int, float, str))})

    def finish(self, metric: str) -> None:
        rows = read_rows(self.path)
        if rows:
            write_curve(self.out, rows, metric)
            if self.run is not None:
                import wandb

                cols = sorted({k for r in rows for k in r})
                table = wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])
                self.run.log({"curve_table": table,
                              "curve": wandb.plot.line(table, "flops_ratio", metric, stroke="method",
                                                       title=f"{metric} vs FLOPs kept")})

    def close(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.finish(self.metric)
        finally:
            self.close(exit_code=0 if exc_type is None else 1)


def _wandb_init(cfg: dict, config: dict, out: Path, name: str, group: str | None):
    import wandb

    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    os.environ.setdefault("WANDB_SILENT", "true")
    mode = cfg.get("mode", "offline")
    if mode == "online":
        os.environ.setdefault("WANDB_INIT_TIMEOUT", str(cfg.get("init_timeout", 30)))
        if not (os.environ.get("WANDB_API_KEY") or _has_netrc()):
            log.warning("wandb.mode=online but no W&B API key is configured; logging offline instead "
                        "(run `wandb login`, then `wandb sync` the offline run)")
            mode = "offline"
    kw = dict(project=cfg.get("project", "stat-exp"), entity=cfg.get("entity"), group=group or cfg.get("group"),
              name=name, config=config, dir=str(out), reinit="finish_previous")
    try:
        return wandb.init(mode=mode, **kw)
    except Exception as e:  # online but unreachable: fall back to an offline run
        if mode != "online":
            raise
        log.warning("W&B online init failed (%s); logging offline instead", str(e).splitlines()[0])
        return wandb.init(mode="offline", **kw)


def _has_netrc() -> bool:
    p = Path.home() / ".netrc"
    return p.exists() and "api.wandb.ai" in p.read_text(errors="ignore")


def write_curve(out: Path, rows: list[dict], metric: str) -> None:
    """curve.csv (all rows) and curve.png (metric vs FLOPs kept, one line per method)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    dense = [r[metric] for r in rows if r["method"] == "dense" and r.get(metric) is not None][:1]
    lines = {}
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"):
        rs = sorted((r for r in rows if r["method"] == method and r.get(metric) is not None),
                    key=lambda r: r["flops_ratio"])
        pts = [(r["flops_ratio"], r[metric]) for r in rs] + [(1.0, d) for d in dense]  # every curve ends at dense
        lines[method] = ([x for x, _ in pts], [y for _, y in pts], None)
    plot_lines(out / "curve.png", lines, metric, "FLOPs kept (fraction of prunable, dense = 1)",
               dense=dense[0] if dense else None)


def plot_lines(path: Path, lines: dict, metric: str, xlabel: str, dense: float | None = None, title: str | None = None,
               log2x: bool = False, reverse_x: bool = False, dense_line: bool = False, caption: str | None = None) -> None:
    """The one figure style: ``lines`` = {label: (xs, ys, yerr or None)}; the dense model as a star at x = 1 (or,
    with ``dense_line``, a dashed horizontal line); log scale for perplexities; ``reverse_x``: the FLOPs axis
    reversed as in the papers (pruning harder to the right); ``caption``: a protocol line under the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrapped = textwrap.wrap(caption, 110) if caption else []
    below = len(lines) > 4  # many lines: the legend goes under the axes instead of over the curves
    legend_in = 0.14 * (len(lines) + (dense is not None)) if below else 0.0
    caption_in = 0.09 * len(wrapped) + (0.1 if wrapped else 0.0)
    height = 3.5 + legend_in + caption_in
    fig, ax = plt.subplots(figsize=(5.5, height), dpi=120)
    for i, (label, (xs, ys, es)) in enumerate(lines.items()):  # past the 10 colours: dashed, square markers
        ax.errorbar(xs, ys, yerr=es, fmt="o-" if i < 10 else "s--", capsize=3 if es else 0, label=label)
    if dense is not None:
        if dense_line:
            ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        else:
            ax.plot([1.0], [dense], "k*", markersize=10, label="dense")
    if metric.startswith("ppl"):
        ax.set_yscale("log")
    if log2x:
        ax.set_xscale("log", base=2)
    if reverse_x:
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    if wrapped:
        fig.text(0.01, 0.01, "\n".join(wrapped), fontsize=5.5, va="bottom")
    ax.grid(alpha=0.3)
    bottom = (legend_in + caption_in) / height
    if below:
        fig.legend(*ax.get_legend_handles_labels(), fontsize=6.5, loc="lower left", frameon=False,
                   bbox_to_anchor=(0.01, caption_in / height))
    else:
        ax.legend(fontsize=7)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path)
    plt.close(fig)
