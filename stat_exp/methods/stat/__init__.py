"""STAT (Flynn et al. 2024, STAT.md): pivoted-QR interpolative decompositions of each site's
activations choose the heads (KV groups, or query heads with attn_units=query_head) and neurons to keep;
the least-squares fit of the dropped units from the kept ones is folded into the consumer. One dense
calibration pass gives every site's Gram, pivot order and error curve e(k) for all k, so a whole budget curve
shares one factorization.

The parts: ``statistics`` (one walk, cached), ``select`` (pivots, error curves, kept units),
``allocate`` (sizes under the budget), ``fold`` (the correction), ``sequential`` (variants that walk the
model being pruned). Named recipes (``stat_paper``, ``stat_nocorr``) are option sets in conf/method/.

Options (all ablations; the first value is the default):
- correction: lstsq_bias (LS with intercept → consumer bias) | lstsq (paper) | mean (FLAP's compensation: the
              dropped units' mean into the consumer bias, no fit) | none
- selection:  qr | random | magnitude (sizes always come from the QR error curves)
- allocation: greedy (marginal error per cost) | paper (the released scripts' search, STAT.md §4.1) | uniform
              | fisher (greedy on e(k)² · tr F / d, F the model's Fisher on the site's output, ``output_fisher``:
              one forward and backward pass over the calibration batches; replaces ``normalize``)
              | propagated (greedy sizes, then greedy again on the normalised curves × A_l, A_l the measured
              growth of a per-token relative error from layer l's output to the last in the model pruned to them,
              ``sequential.amplification``: one extra walk over the calibration batches per budget)
              | flap (FLAP's sizes: how many units each site keeps under FLAP's score and global threshold, read from
              this run's statistics as keep_from=flap does; STAT's pivots choose which. Query heads under GQA: as
              many heads as FLAP keeps, chosen by their pivots among the heads of FLAP's KV groups, so the shared
              K/V never costs more than FLAP's plan)
              | choose (per budget, the allocation of ``choose_from`` whose pruned and folded model has the lowest
              task loss on ``choose_batches`` batches of the calibration corpus' other windows (``Context.unseen``;
              a language model's next-token loss), or with ``choose_on=calibration`` on the first calibration
              batches (biased: the windows that built the plans favour the plan that fits them most; any task with
              labels), ``statistics.calibration_loss``: per candidate one fold and one forward pass of those
              batches; the row records the choice and every candidate's loss. With propagate=pruned the candidates
              are compared as one-pass models). ``choose_ridge`` (a list): every candidate allocation is folded at
              each of these ridges, and the fold's ridge is chosen with the allocation (sizes and units from the
              curves at ``ridge``; one-pass only))
- paper_variant: auto (the family's: post-LN encoders bert, pre-LN decoders opt) | bert | opt
- paper_shares: cost (FFN share of a layer from our cost model) | released (0.6622759 bert, 4/7 opt)
- paper_head_quirk: false | true (the released head-level indexing: permutation used for its inverse)
- paper_sketch: false | true (opt variant: the released block Gaussian sketch, 100 rows per calibration batch)
- propagate:  dense (one pass, as the released code) | pruned (sequential, statistics on pruned inputs)
- target:     self | dense (propagate=pruned: fit the dense model's consumer output)
- reselect:   true | false (propagate=pruned: choose each site's units again from its pruned-path statistics, at
              the dense allocation's sizes (query heads under GQA: among the heads of the KV groups the dense plan
              keeps, so never more K/V; selection=qr), or keep the dense plan's units (allocation, selection or
              keep_from) and refit only the fold on the pruned path)
- order:      joint | ffn_first (released: FFNs first, head statistics on the FFN-pruned model)
- head_space: output (columns vec(W_o,h c_h)) | context (paper: columns vec(c_h))
- normalize:  residual (error / residual-stream energy) | median (/ N × its median token's ‖h‖², blind to
              attention sinks' massive activations) | layer (/ branch-output energy) | none
- sketch:     gram | tsqr | countsketch | gaussian (sketch_dim rows, default 4n)
- floor:      greedy allocation keeps ≥ ⌈floor · budget · n⌉ units of every site; ridge: LS Tikhonov term
- keep_from:  null | a saved plan.json: keep its units (sizes and pivots; same model, units and budget) and fold
              with this run's statistics, e.g. exact statistics with a sketch's plan, to tell a plan's error
              from the fold's | flap: FLAP's units (its score and global threshold, ``methods.simple.FLAP``)
              from this run's statistics, var(z_j) = G_jj/N − μ_j², folded as configured (one run, no FLAP pass)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields

from ...core import allocation as alloc
from ...core.linalg import make_accumulator
from ...core.plan import PrunePlan, read_keeps
from ...engine.capture import SiteStats
from ...engine.surgery import apply_plan, shared_copy
from ...errors import UserError
from ...latency import elapsed
from ...progress import progress
from ..base import Method
from ..simple import FLAP
from . import allocate, sequential
from .fold import FITS, fold
from .select import factor, select, selection_order, within_groups
from .statistics import cache_path, calibration_loss, collect, diagonal, fisher, full, gram

log = logging.getLogger("stat_exp")

CHOICES = {"correction": ("lstsq_bias", "lstsq", "mean", "none"), "selection": ("qr", "random", "magnitude"),
           "allocation": ("greedy", "paper", "uniform", "fisher", "propagated", "flap", "choose"),
           "propagate": ("dense", "pruned"), "target": ("self", "dense"), "order": ("joint", "ffn_first"),
           "head_space": ("output", "context"), "normalize": ("residual", "median", "layer", "none"),
           "sketch": ("gram", "tsqr", "countsketch", "gaussian", "gaussian_block"),
           "paper_variant": ("auto", "bert", "opt"), "paper_shares": ("cost", "released"),
           "choose_on": ("unseen", "calibration")}


@dataclass(frozen=True)
class Options:
    correction: str = "lstsq_bias"
    selection: str = "qr"
    allocation: str = "greedy"
    propagate: str = "dense"
    target: str = "self"
    reselect: bool = True
    order: str = "joint"
    head_space: str = "output"
    normalize: str = "residual"
    sketch: str = "gram"
    sketch_dim: int | str | None = None  # rows, "<k>x" (k × the site's width) or None (4 × the width)
    floor: float = 0.5
    ridge: float = 1e-8
    cache: bool = True
    paper_variant: str = "auto"
    paper_shares: str = "cost"
    paper_head_quirk: bool = False
    paper_sketch: bool = False
    keep_from: str | None = None
    choose_from: tuple[str, ...] = ("greedy", "flap")  # allocation=choose: the candidates
    choose_batches: int | None = 1  # allocation=choose: batches measured on (None: as many as calibration has)
    choose_on: str = "unseen"  # allocation=choose: other windows of the calibration corpus | calibration: its own
    choose_ridge: tuple[float, ...] | None = None  # allocation=choose: the fold's ridge chosen among these too

    def __post_init__(self):
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"method option {key}={getattr(self, key)!r}; choose one of {', '.join(allowed)}")
        bad = [a for a in self.choose_from if a not in CHOICES["allocation"] or a == "choose"]
        if self.allocation == "choose" and (bad or not self.choose_from):
            raise UserError(f"method option choose_from={list(self.choose_from)}: list allocations to choose between, "
                            f"from {', '.join(a for a in CHOICES['allocation'] if a != 'choose')}")
        if self.choose_ridge is not None and (self.allocation != "choose" or not self.choose_ridge or
                                              min(self.choose_ridge) < 0 or self.propagate != "dense" or
                                              self.order != "joint"):
            raise UserError(f"method option choose_ridge={list(self.choose_ridge)}: a list of ridges >= 0 that "
                            "allocation=choose folds each candidate at (one pass: propagate=dense, order=joint); "
                            "otherwise set method.options.ridge")
        if self.choose_batches is not None and self.choose_batches < 1:
            raise UserError(f"method option choose_batches={self.choose_batches}; pass a number of calibration "
                            "batches >= 1, or null for all")
        d = self.sketch_dim
        if d is not None and not ((isinstance(d, int) and d > 0) or (isinstance(d, str) and d.endswith("x") and
                                                                   d[:-1].replace(".", "", 1).isdigit())):
            raise UserError(f"sketch.dim={d!r}; pass a number of rows, k × the site width as '2x', or null")
        if not self.reselect and self.propagate != "pruned":
            raise UserError("method option reselect=false keeps the dense plan's units while propagate=pruned refits "
                            "their folds; pass propagate=pruned")
        if self.target == "dense" and self.propagate != "pruned":
            raise UserError("method option target=dense needs propagate=pruned (with one dense pass the "
                            "activations are the dense ones already)")
        if self.keep_from and ((self.order, self.allocation, self.selection) != ("joint", "greedy", "qr") or
                               (self.propagate == "pruned" and self.reselect)):
            raise UserError("method option keep_from replaces the allocation and selection; use it with the defaults "
                            "order=joint allocation=greedy selection=qr, and with propagate=pruned only with "
                            "reselect=false (the plan's units, folds refitted on the pruned path)")
        flap = "keep_from=flap" if self.keep_from == "flap" else "allocation=flap" if self.uses("flap") else ""
        if flap and self.sketch not in ("gram", "tsqr"):
            raise UserError(f"method option {flap} reads each channel's variance from the Gram's diagonal, "
                            f"which sketch={self.sketch} only estimates; use sketch=gram or tsqr")

    def uses(self, allocation: str) -> bool:
        """Whether ``allocation`` sizes the sites: the option's, or one of allocation=choose's candidates."""
        return self.allocation == allocation or (self.allocation == "choose" and allocation in self.choose_from)


class STAT(Method):
    name, uses_sketch = "stat", True

    def __init__(self, **options):
        known = {f.name for f in fields(Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"unknown STAT option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        super().__init__(**options)
        self.opts = Options(**{k: (float(v) if k in ("floor", "ridge") else tuple(v) if k == "choose_from" else
                                   tuple(map(float, v)) if k == "choose_ridge" and v is not None else v)
                               for k, v in options.items()})
        self.timings: dict[str, float] = {}

    @classmethod
    def wants_labels(cls, options: dict) -> bool:
        return options.get("allocation") in ("fisher", "choose")  # the calibration inputs as full-model batches

    @classmethod
    def wants_unseen(cls, options: dict, calib_batches: int) -> int:
        """allocation=choose with choose_on=unseen: choose_batches batches (None: as many as calibration has)."""
        if options.get("allocation") != "choose" or options.get("choose_on", Options.choose_on) != "unseen":
            return 0
        return options.get("choose_batches", Options.choose_batches) or calib_batches

    def new_acc(self, kind):
        return make_accumulator(*self.sketch, self.ctx.seed)

    @property
    def variant(self) -> str:
        """The released allocation's variant: the option, or the family's (adapter.paper_variant)."""
        v = self.opts.paper_variant
        return self.ctx.adapter.paper_variant if v == "auto" else v

    @property
    def sketch(self) -> tuple[str, int | None]:
        """(kind, rows): the option's, or the OPT script's block Gaussian sketch of 100 rows with paper_sketch."""
        o = self.opts
        if o.paper_sketch and o.allocation == "paper" and self.variant == "opt":
            return "gaussian_block", 100
        return o.sketch, o.sketch_dim

    def calibrate(self, ctx, cap) -> None:
        """With allocation=fisher the output Fisher first (its backward pass never beside the Grams), then the
        statistics (one walk, or the cache), then every site's pivots and error curve (none with keep_from)."""
        self.ctx, self.cap, o, self.timings = ctx, cap, self.opts, {}
        if o.order == "ffn_first":
            ctx.refuse_groups("order=ffn_first", "sizes the sites before it sees the pivots it keeps")
        if o.propagate == "pruned" and o.reselect and o.selection != "qr" and ctx.grouped:
            raise UserError(f"propagate=pruned chooses query heads again by their pivots, not selection={o.selection}; "
                            "use selection=qr or method.options.reselect=false")
        if o.uses("paper"):
            ctx.refuse_groups("allocation=paper")
        if o.uses("flap") and ctx.grouped and o.selection != "qr":
            raise UserError(f"allocation=flap chooses query heads by their pivots within FLAP's KV groups, not "
                            f"selection={o.selection}; use selection=qr or attn_units=kv_group")
        self.fixed = read_keeps(o.keep_from, ctx.site_keys, ctx.n_units) \
            if o.keep_from and o.keep_from != "flap" else None  # before the walk
        path = cache_path(ctx.cache_dir, ctx.cache_key, *self.sketch) if o.cache else None
        if o.allocation == "choose" and o.choose_on == "unseen" and not ctx.unseen:
            raise UserError("allocation=choose with choose_on=unseen needs labelled batches besides the calibration "
                            "ones (ctx.unseen); use a language-model task, or choose_on=calibration")
        if (o.uses("fisher") or o.allocation == "choose") and not ctx.labelled:
            raise UserError(f"allocation={o.allocation} needs the calibration batches as model inputs (ctx.labelled); "
                            "use a language-model, GLUE or SQuAD task, or allocation=greedy")
        if o.uses("fisher"):  # before the statistics: its backward pass and their Grams never coexist
            t = time.perf_counter()
            self.fisher = fisher(ctx, path and path.with_name(path.stem + "-fisher-w.pt"), ctx.cache_max_bytes)
            self.timings["fisher_s"] = elapsed(t, ctx.device)
        t = time.perf_counter()
        self.stats = collect(ctx, cap, *self.sketch, path, ctx.cache_max_bytes)
        self.timings["statistics_s"] = elapsed(t, ctx.device)
        if o.keep_from:  # the units are given: no pivots or error curves to compute (5 min on a 1.5B model)
            self.factors = None
            return
        t = time.perf_counter()
        quirk = o.allocation == "paper" and o.paper_head_quirk
        self.factors = [factor(ctx.site(i), self.gram(i), o.head_space, o.ridge, quirk, o.normalize == "layer")
                        for i in progress(range(len(ctx.site_keys)), "stat: factorise", unit="site")]
        self.timings["factorization_s"] = elapsed(t, ctx.device)

    def gram(self, i: int):
        return gram(self.stat(i), self.opts.correction == "lstsq_bias", self.ctx.device)

    def fold(self, i: int, keep: list[int], ridge: float | None = None):
        """Site ``i``'s plan for the kept units ``keep``, with the configured correction (dense statistics) and
        ``ridge`` (the option's when None)."""
        o = self.opts
        return fold(self.ctx.site(i), self.fit_gram(self.stat(i)), self.stat(i), keep, o.correction,
                    o.ridge if ridge is None else ridge)

    def fold_ridge(self, budget: float) -> float:
        """The one-pass fold's ridge at ``budget``: the option's, or allocation=choose's pick of ``choose_ridge``."""
        c = getattr(self, "choice", {})
        return c["ridge_chosen"] if c.get("budget") == budget and "ridge_chosen" in c else self.opts.ridge

    def fit_gram(self, st: dict):
        """A site's full Gram on the device when the correction fits (``fold.FITS``); None for mean and none, which
        read only Σz and N (no unpacking of an n × n triangle they never use)."""
        return full(st).to(self.ctx.device) if self.opts.correction in FITS else None

    def counts(self, budget: float, allocation: str | None = None) -> list[int]:
        """Kept units per site at ``budget`` (a fraction of the dense cost), by ``allocation`` (the option's)."""
        ctx, o, B = self.ctx, self.opts, self.ctx.budget(budget)
        a = allocation or o.allocation
        if a == "flap":
            return [len(k) for k in self.flap_keeps(budget)]
        if a == "choose":
            return [len(k) for k in self.keeps(budget, a)]
        costs = ctx.curves([self.order(i) for i in range(len(ctx.site_keys))])  # along each site's selection
        if a == "uniform":
            return alloc.uniform(costs, B)
        if a == "paper":
            return self.paper_counts(budget)
        if a == "fisher":
            curves = [f["err2"].double() * w for f, w in zip(self.factors, self.fisher)]
        else:
            key = "resid_median" if o.normalize == "median" else "resid"
            resid = [self.stat(i).get(key, 1.0) for i in range(len(ctx.site_keys))]
            curves = allocate.curves(ctx.site_keys, self.factors, resid, o.normalize)
        counts = allocate.greedy_counts(curves, costs, B, budget, o.floor)
        if a == "propagated":  # price each site's relative error by its measured growth downstream
            t = time.perf_counter()
            amp = sequential.amplification(self, counts)
            self.timings["propagation_s"] = elapsed(t, ctx.device)
            curves = [c * amp[li] for (li, _), c in zip(ctx.site_keys, curves)]
            counts = allocate.greedy_counts(curves, costs, B, budget, o.floor)
        return counts

    def order(self, i: int):
        """The order site ``i`` keeps its units in (``select.selection_order``)."""
        return selection_order(self.opts.selection, self.factors[i]["perm"], self.ctx.site(i), self.ctx.seed, i)

    def phi_ffn(self) -> float:
        """The FFN share of a layer's cost: released (per variant) or from the cost model (dense model)."""
        if self.opts.paper_shares == "released":
            return allocate.PAPER_SHARES[self.variant]
        ctx = self.ctx
        cost = [n * c for n, c in zip(ctx.n_units, ctx.costs)]
        return sum(c for c, (_, k) in zip(cost, ctx.site_keys) if k == "ffn") / sum(cost)

    def paper_counts(self, budget: float) -> list[int]:
        """The released allocation (STAT.md §4.1) mapped back to sites."""
        keys, f = self.ctx.site_keys, self.factors
        att = [i for i, (_, k) in enumerate(keys) if k == "attn"]
        ffn = [i for i, (_, k) in enumerate(keys) if k == "ffn"]
        if len(att) != len(ffn):
            raise UserError(f"allocation=paper needs heads and neurons in every layer; the {self.ctx.adapter.family} "
                            "family prunes FFN neurons only: use allocation=greedy")
        level = "err2_quirk" if self.opts.paper_head_quirk else "err2"
        r, e = allocate.paper_levels([f[i]["rdiag"] for i in ffn], [f[i][level][:-1].sqrt() for i in att],
                                     self.variant)
        heads, neurons = allocate.paper_counts(r, e, [f[i]["err2"] for i in ffn], self.phi_ffn(), budget,
                                               self.variant)
        counts = [0] * len(keys)
        for i, c in zip(att + ffn, heads + neurons):
            counts[i] = c
        return counts

    def keeps(self, budget: float, allocation: str | None = None) -> list[list[int]]:
        """Kept units per site at ``budget``: sized by ``allocation`` (the option's) and chosen by the selection, or
        the ``keep_from`` plan's (made at this budget)."""
        ctx, o = self.ctx, self.opts
        a = allocation or o.allocation
        if self.fixed:
            made_at, keeps = self.fixed
            if abs(made_at - budget) > 1e-9:
                raise UserError(f"keep_from={o.keep_from} holds a plan made at budget {made_at:g}; run it with "
                                f"budget=[{made_at:g}]")
            return keeps
        if o.keep_from == "flap":
            return self.flap_keeps(budget)
        if a == "choose":
            return self.keeps(budget, self.choose(budget))
        if a == "flap" and ctx.grouped:  # FLAP's KV groups and head counts, STAT's heads within them
            return [within_groups(ctx.site(i), self.gram(i), k, o.head_space) if ctx.groups[i] is not None else
                    select(o.selection, self.factors[i]["perm"], len(k), ctx.site(i), ctx.seed, i)
                    for i, k in enumerate(self.flap_keeps(budget))]
        counts = self.counts(budget, a)
        return [select(o.selection, self.factors[i]["perm"], counts[i], ctx.site(i), ctx.seed, i)
                for i in range(len(ctx.site_keys))]

    def choose(self, budget: float) -> str:
        """allocation=choose: the candidate of ``choose_from`` whose pruned and folded model has the lowest task loss
        (``statistics.calibration_loss``) on ``choose_batches`` labelled batches: windows of the calibration corpus
        besides the calibration ones (``choose_on=unseen``, ``ctx.unseen``) or the first calibration batches
        (``choose_on=calibration``). With ``choose_ridge`` a candidate is an allocation and a fold ridge (named
        ``<allocation> ridge=<r>``). A shared copy of the model per candidate, the dense model untouched; measured
        once per budget, kept in ``self.choice``. When the last candidate wins, its folds are kept for ``plan``
        (``self.folded``), which would otherwise fold it again; no two candidates' folds are held at once."""
        t = time.perf_counter()
        if getattr(self, "choice", {}).get("budget") != budget:
            ctx, n, ridges = self.ctx, self.opts.choose_batches, self.opts.choose_ridge
            cands = {(f"{a} ridge={r:g}" if ridges else a): (a, r)
                     for a in self.opts.choose_from for r in (ridges or [self.opts.ridge])}
            last, losses, keeps = list(cands)[-1], {}, {}
            for name, (a, r) in cands.items():
                if a not in keeps:  # one allocation's units at every ridge
                    keeps[a] = self.keeps(budget, a)
                folding = progress(keeps[a], f"stat: fold {name} at {budget:g}", unit="site")
                sites = [self.fold(i, k, r) for i, k in enumerate(folding)]
                pruned = apply_plan(shared_copy(ctx.model), PrunePlan(ctx.layered(sites)), adapter=ctx.adapter)
                if name != last:
                    del sites
                losses[name] = calibration_loss(ctx, pruned, ctx.unseen if self.opts.choose_on == "unseen" else
                                                ctx.labelled[:n])
                del pruned
            best = min(losses, key=losses.get)
            self.choice = {"budget": budget, "allocation_chosen": cands[best][0], "choice_loss": losses,
                           **({"ridge_chosen": cands[best][1]} if ridges else {})}
            one_pass = self.opts.propagate == "dense" and self.opts.order == "joint"  # the paths that call plan
            self.folded = (budget, sites) if one_pass and best == last else None
            del sites
            log.info("stat: allocation=choose at %g: %s (loss on %s windows: %s)", budget, best,
                     self.opts.choose_on, ", ".join(f"{a} {v:.4f}" for a, v in losses.items()))
        self.timings["choice_s"] = elapsed(t, self.ctx.device)  # ~0 when this budget's choice was made before
        return self.choice["allocation_chosen"]

    def flap_keeps(self, budget: float) -> list[list[int]]:
        """FLAP's kept units at ``budget``: its score per site (``FLAP.site_score``) on moments read from this
        run's statistics of the same tokens (Σz, Σz² = diag G, N) and its one global threshold."""
        ctx, flap = self.ctx, FLAP()
        scores = []
        for i, (_, kind) in enumerate(ctx.site_keys):
            st, moments = self.stat(i), SiteStats()
            moments.s1, moments.s2, moments.n = st["s1"].double(), diagonal(st), st["n"]
            scores.append(flap.site_score(ctx.site(i), moments, kind))
        return alloc.by_score(scores, ctx.costs, ctx.budget(budget), ctx.groups, ctx.group_costs)

    def row_info(self) -> dict:
        """What a row should say about how the budget was allocated (the released allocation's choices)."""
        if self.opts.allocation != "paper":
            kind, dim = self.sketch
            fixed = {"keep_from": self.opts.keep_from} if self.opts.keep_from else {}
            if self.opts.correction != "lstsq_bias":  # another fold: the row says which
                fixed["correction"] = self.opts.correction
            if self.opts.ridge != Options.ridge:
                fixed["ridge"] = self.opts.ridge
            for key in ("propagate", "target", "reselect", "order", "normalize"):  # a variant: the row says which
                if getattr(self.opts, key) != getattr(Options, key):
                    fixed[key] = getattr(self.opts, key)
            if self.opts.allocation == "choose":  # which candidate won, and every candidate's measured loss
                fixed.update({k: v for k, v in self.choice.items() if k != "budget"},
                             choose_from=",".join(self.opts.choose_from), choose_batches=self.opts.choose_batches,
                             choose_on=self.opts.choose_on)
                if self.opts.choose_ridge:
                    fixed["choose_ridge"] = ",".join(f"{r:g}" for r in self.opts.choose_ridge)
            return fixed if kind == "gram" else {"sketch": kind, "sketch_dim": dim, **fixed}
        return {"paper_variant": self.variant, "paper_shares": self.opts.paper_shares,
                "phi_ffn": self.phi_ffn(), "sketch": self.sketch[0]}

    def plan(self, budget: float) -> PrunePlan:
        """One-pass plan: sizes, the first pivots of each site, and the fold from the dense statistics."""
        ctx = self.ctx
        t = time.perf_counter()
        self.timings.pop("propagation_s", None)
        self.timings.pop("choice_s", None)
        keeps = self.keeps(budget)  # the walks of allocation=propagated and =choose are stages of their own
        self.timings["allocation_s"] = elapsed(t, ctx.device) - self.timings.get("propagation_s", 0.0) - \
            self.timings.get("choice_s", 0.0)
        folded, self.folded = getattr(self, "folded", None), None  # allocation=choose: the winner's, when kept
        folding = progress(range(len(ctx.site_keys)), f"stat: fold at {budget:g}", unit="site")
        sites = folded[1] if folded and folded[0] == budget else \
            [self.fold(i, keeps[i], self.fold_ridge(budget)) for i in folding]
        return PrunePlan(ctx.layered(sites), meta={"method": self.name, "budget": budget, "n_units": ctx.n_units,
                                                   "counts": [len(k) for k in keeps]})

    def prune(self, model, budget: float) -> PrunePlan:
        t = time.perf_counter()
        if self.opts.propagate == "pruned":  # sizes (reselect) or the units themselves from the dense statistics
            fixed = self.keeps(budget) if not self.opts.reselect or self.ctx.grouped else None
            self.counts_now = self.counts(budget) if fixed is None else [len(k) for k in fixed]
            plan = sequential.prune_sequential(self, model, budget, fixed)
        elif self.opts.order == "ffn_first":
            plan = sequential.prune_ffn_first(self, model, budget)
        else:
            plan = super().prune(model, budget)
        self.timings["fold_s"] = elapsed(t, self.ctx.device) - sum(self.timings.get(k, 0.0) for k in (
            "allocation_s", "propagation_s", "choice_s"))
        return plan
