"""Pure linear algebra for STAT (float64 factorizations; no modules, no configs).

Notation (STAT.md §2):
| symbol | shape    | meaning                                                           |
|--------|----------|-------------------------------------------------------------------|
| Z      | N × n    | a site's consumer input on N calibration tokens (never stored)     |
| G      | n × n    | ZᵀZ (or AᵀA for a sketch/TSQR factor A with AᵀA ≈ ZᵀZ)              |
| D      | n        | column scaling (‖W[:, j]‖ for neurons)                             |
| P      | n        | pivot order of column-pivoted QR of Z·D                            |
| R      | k × n    | rows of the QR factor, columns in original order (R[:, P] is upper) |
| e(k)²  | n + 1    | ‖Z_E − Z_I T‖²_F for the first k pivots kept (suffix sums of R)    |
| T      | k × (n−k)| interpolation matrix: Z_E ≈ Z_I T                                  |
"""
from __future__ import annotations

import numpy as np
import torch


def pivoted_qr_scipy(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: LAPACK geqp3 via SciPy. A: (m, n). Returns (P (n,), R (min(m,n), n) in pivot order)."""
    import scipy.linalg

    R, P = scipy.linalg.qr(A.detach().double().cpu().numpy(), mode="r", pivoting=True)
    return torch.from_numpy(P.astype(np.int64)), torch.from_numpy(R[: min(A.shape)])


def pivoted_cholesky(G: torch.Tensor, k: int | None = None, block: int = 128, rtol: float = 1e-12,
                     backend: str = "auto", overwrite: bool = False, diag_only: bool = False):
    """Greedy diagonal-pivoted Cholesky of a PSD Gram G (n, n), in float64: LAPACK ``dpstrf`` for host
    tensors (backend 'lapack'), a blocked torch loop on accelerators (backend 'torch'; on a 2-core host it
    runs at half dpstrf's speed at n = 11008, results/scale.md). ``overwrite``: a contiguous float64 host G may
    serve as LAPACK's scratch (its contents are lost) instead of being copied. ``diag_only``: R's pivot
    diagonal |R[j, P[j]]| (k,) in R's place (all FFN selection reads; forming R is a k × n gather, 1.3 s at
    n = 11008).

    Same pivots and R as column-pivoted QR of any Z with ZᵀZ = G (exact arithmetic).
    Returns (P (k,), R (k, n) with columns in original order, err2 (k+1,)) where err2[j] is the
    squared residual ‖Z_E − Z_I T‖²_F when the first j pivots are kept. Past the numerical rank
    (residual diagonal ≤ rtol·max diag) rows are zero and the remaining pivots are arbitrary.
    """
    if backend == "lapack" or (backend == "auto" and G.device.type == "cpu"):
        P, R, err2 = _pivoted_cholesky_lapack(G, k, rtol, overwrite, diag_only)
    else:
        P, R, err2 = _pivoted_cholesky_blocked(G, k, block, rtol)
        R = R[torch.arange(len(P), device=R.device), P].abs() if diag_only else R
    return P, R, err2


def _pivoted_cholesky_blocked(G: torch.Tensor, k: int | None, block: int, rtol: float):
    """Right-looking, ``block`` pivots at a time. Within a block each pivot's row of the Schur complement is
    A[p] − R_bᵀR_b[:, p] (a small product); after the block the complement shrinks to the columns still free and
    takes one rank-b update, so the work is ≈ 2n³/3 in matrix products (n³ of them on the shrinking complement)
    and the per-pivot work touches one row (LAPACK's dpstrf swaps a row and a column per pivot instead)."""
    A = G.to(torch.float64)  # the Schur complement on the still-free columns `free` (original indices); G is
    n = A.shape[0]           # only read: each block's update lands in a new, smaller matrix
    k = n if k is None else min(k, n)
    dev = A.device
    free = torch.arange(n, device=dev)
    d = torch.diagonal(A).clone().clamp_min_(0)
    thr = rtol * float(d.max()) if n else 0.0
    P = torch.empty(k, dtype=torch.long, device=dev)
    R = torch.zeros(k, n, dtype=torch.float64, device=dev)
    err2 = torch.empty(k + 1, dtype=torch.float64, device=dev)
    i = 0
    while i < k:
        b, m = min(block, k - i), len(free)
        Rb = torch.zeros(b, m, dtype=torch.float64, device=dev)
        taken = torch.zeros(m, dtype=torch.bool, device=dev)
        for j in range(b):
            err2[i + j] = d.sum()
            p = torch.argmax(torch.where(taken, -1.0, d))
            row = A[p] - Rb[:j, p] @ Rb[:j]  # (m,) row p of the current Schur complement
            dp = d[p]
            r = torch.where(dp > thr, row / dp.clamp_min(1e-300).sqrt(), 0.0)
            Rb[j] = torch.where(taken, 0.0, r)
            P[i + j] = free[p]
            d.sub_(Rb[j].square()).clamp_min_(0)
            d[p] = 0
            taken[p] = True
        R[i:i + b, free] = Rb
        rest = (~taken).nonzero().flatten()
        Rr = Rb[:, rest]
        A = A.index_select(0, rest).index_select(1, rest).addmm_(Rr.T, Rr, alpha=-1.0)
        d, free = d[rest], free[rest]
        i += b
    err2[k] = d.sum()
    return P, R, err2


def _pivoted_cholesky_lapack(G: torch.Tensor, k: int | None, rtol: float, overwrite: bool = False,
                             diag_only: bool = False):
    """``dpstrf``'s lower variant (its upper one took 8.7 s against 6.5 s at n = 11008 on a 2-core host): G's
    row-major buffer read column-major is G itself (symmetric), and the column-major L it leaves, read row-major,
    is U = Lᵀ with one pivot's row of R per contiguous row."""
    from scipy.linalg import lapack

    n = G.shape[0]
    k = n if k is None else min(k, n)
    if n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    inplace = overwrite and G.dtype == torch.float64 and G.device.type == "cpu" and G.is_contiguous()
    g = G.detach() if inplace else G.detach().to("cpu", torch.float64, copy=True)
    dmax = float(torch.diagonal(g).max())
    trace = float(torch.diagonal(g).sum())
    c, piv, rank, info = lapack.dpstrf(g.numpy().T, lower=1, tol=rtol * dmax if dmax > 0 else 0.0, overwrite_a=1)
    perm = torch.from_numpy(piv.astype(np.int64) - 1)          # LAPACK pivots are 1-based
    U = torch.from_numpy(c.T)[:k].triu_()                       # G[perm][:, perm] = UᵀU; below: G's leftovers
    U[rank:] = 0.0
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    R = U.diagonal().abs().clone() if diag_only else U.index_select(1, inv)  # R[:, perm] = U: original order
    rows2 = torch.linalg.vector_norm(U, dim=1).square()          # ‖U[j]‖²
    removed = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(rows2, 0)])
    err2 = (trace - removed).clamp_min(0.0)                     # residual diagonal mass after j pivots
    return perm[:k].clone(), R, err2


def ridge_solve(A: torch.Tensor, B: torch.Tensor, ridge: float, overwrite: bool = False) -> torch.Tensor:
    """X solving (A + λI) X = B for a PSD A (k, k) and B (k, m) or (k,), in float64, with
    λ = ridge · mean(diag A) (a Tikhonov term relative to A's scale). Cholesky; least squares when
    A + λI is not numerically positive definite (pseudo-inverse). The one regularised solve of the project.
    ``overwrite``: a float64 A may be used as scratch (its diagonal gains λ) instead of copied."""
    inplace = overwrite and A.dtype == torch.float64
    A, B = A.to(torch.float64), B.to(torch.float64)
    vec = B.dim() == 1
    B = B[:, None] if vec else B
    lam = ridge * float(torch.diagonal(A).mean().clamp_min(1e-300))
    A = A if inplace else A.clone()
    A.diagonal().add_(lam)
    L, info = torch.linalg.cholesky_ex(A)
    # not positive definite: the minimum-norm least-squares solution through the symmetric pseudo-inverse
    # (torch.linalg.lstsq's CPU default, gelsy, returns zeros on ~10% of calls for a rank-deficient A)
    X = torch.cholesky_solve(B, L) if int(info) == 0 else torch.linalg.pinv(A, hermitian=True) @ B
    return X[:, 0] if vec else X


def lstsq_from_gram(G: torch.Tensor, keep: torch.Tensor, drop: torch.Tensor, ridge: float = 1e-10) -> torch.Tensor:
    """X (k, n−k) minimising ‖Z_drop − Z_keep X‖_F from G = ZᵀZ: X = (G_II + λI)⁻¹ G_IE (``ridge_solve``)."""
    G = G.to(torch.float64)
    if len(keep) == 0 or len(drop) == 0:
        return torch.zeros(len(keep), len(drop), dtype=torch.float64, device=G.device)
    return ridge_solve(G[keep][:, keep], G[keep][:, drop], ridge)


def interpolative(P: torch.Tensor, R: torch.Tensor, k: int) -> torch.Tensor:
    """T (k, n−k) of the ID from pivoted-QR rows: T = R₁₁⁻¹ R₁₂ (zero rows past the rank)."""
    I, E = P[:k], P[k:]
    R11, R12 = R[:k][:, I], R[:k][:, E]
    rank = int((torch.diagonal(R11).abs() > 0).sum())
    T = torch.zeros(k, len(E), dtype=R.dtype, device=R.device)
    if rank:
        T[:rank] = torch.linalg.solve_triangular(R11[:rank, :rank], R12[:rank], upper=True)
    return T


def centered(G: torch.Tensor, s1: torch.Tensor, n: int, inplace: bool = False) -> torch.Tensor:
    """Gram of the centred columns: ZᵀZ − N μμᵀ (the intercept option), a new float64 matrix (one n × n
    allocation: the rank-one term is subtracted in place), or G itself when ``inplace`` (G float64)."""
    mu = s1.to(G.device, torch.float64) / max(n, 1)
    return (G if inplace else G.to(torch.float64, copy=True)).addr_(mu, mu, alpha=-n)


def block_trace(G: torch.Tensor, size: int) -> torch.Tensor:
    """(U, U) traces of each size × size block pair of G: ⟨vec Z_u, vec Z_v⟩ (heads as flattened contexts)."""
    U = G.shape[0] // size
    return torch.diagonal(G.reshape(U, size, U, size), dim1=1, dim2=3).sum(-1)


def unit_output_gram(G: torch.Tensor, W: torch.Tensor, size: int, blocks: int = 8) -> torch.Tensor:
    """(U, U) Gram of the units' outputs through the consumer W (d, n): Gu[u, v] = Σ_tokens ⟨W_u z_u, W_v z_v⟩
    = Σ_{i∈u, j∈v} G_ij (WᵀW)_ij, units of ``size`` columns. WᵀW is formed only on the upper block triangle, in
    ``blocks`` unit-aligned strips, and reduced strip by strip: ≈ (1 + 1/blocks)/2 of its products, no n × n
    product held."""
    U = G.shape[0] // size
    step = -(-U // blocks) if U else 1
    Gu = torch.zeros(U, U, dtype=G.dtype, device=G.device)
    for a in range(0, U, step):
        b, s, e = min(a + step, U), a * size, min(a + step, U) * size
        strip = (W[:, s:e].T @ W[:, s:]).mul_(G[s:e, s:])
        Gu[a:b, a:] = strip.reshape(b - a, size, U - a, size).sum((1, 3))
    return Gu.triu() + Gu.triu(1).T


def lower_product_colnorms(A: torch.Tensor, L: torch.Tensor, blocks: int = 8) -> torch.Tensor:
    """(n,) squared column norms of A L for A (d, n) and a lower-triangular L (n, n), strip by strip: columns
    a…b of A L are A[:, a:] L[a:, a:b], so ≈ (1 + 1/blocks)/2 of the full product's FLOPs, no d × n product held."""
    n = L.shape[0]
    step = -(-n // blocks) if n else 1
    out = torch.empty(n, dtype=torch.promote_types(A.dtype, L.dtype), device=L.device)
    for a in range(0, n, step):
        out[a:a + step] = (A[:, a:] @ L[a:, a:a + step]).square_().sum(0)
    return out


# ------------------------------------------------------------------ streaming accumulators
def _gram_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """aᵀb in fp32. For bf16/fp16 activations on CUDA, TF32 tensor cores are exact on the inputs
    (≤ 10 mantissa bits) and accumulate in fp32, so they are used; otherwise plain fp32."""
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return a.float().T @ b.float()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    return a.float().T @ b.float()


GRAM_BLOCKS = 8  # column strips of the blocked Gram product


def upper_gram_flops(tokens: int, n: int, blocks: int = GRAM_BLOCKS) -> int:
    """FLOPs ``add_upper_gram`` executes for ``tokens`` rows of width n: Σ_strips 2·N·width·(n − start), i.e.
    (1 + 1/blocks)·N·n² when blocks divide n (the full product is 2·N·n², a symmetric rank-k update N·n²)."""
    step = -(-n // blocks)
    return sum(2 * tokens * (min(s + step, n) - s) * (n - s) for s in range(0, n, step))


def add_upper_gram(G: torch.Tensor, z: torch.Tensor, blocks: int = GRAM_BLOCKS) -> torch.Tensor:
    """G[s:e, s:] += Z[:, s:e]ᵀ Z[:, s:] for ``blocks`` column strips of Z (N, n): the upper block triangle
    of ZᵀZ (diagonal blocks whole), in fp32 products summed into G's dtype. (1 + 1/blocks)/2 of the full
    product's FLOPs, and no n × n fp32 temporary: 4.9 s vs 10.1 s for N = 8192, n = 8960 on a 2-core AVX2
    host. Below the diagonal blocks G is untouched; ``mirror_upper`` completes it."""
    n = z.shape[1]
    step = -(-n // blocks)
    for s in range(0, n, step):
        G[s:s + step, s:].add_(_gram_product(z[:, s:s + step], z[:, s:]))
    return G


def mirror_upper(G: torch.Tensor, blocks: int = GRAM_BLOCKS) -> torch.Tensor:
    """Copy the strips above the diagonal blocks of ``add_upper_gram`` below them, in place: G symmetric."""
    n = G.shape[0]
    step = -(-n // blocks)
    for s in range(step, n, step):
        G[s:s + step, :s] = G[:s, s:s + step].T
    return G


class GramAccumulator:
    """G = Σ_b Z_bᵀ Z_b (fp32 products, float64 sum; only the upper block triangle is formed per batch and
    mirrored once, by ``gram``), Σz, count."""

    kind = "gram"

    def __init__(self, n: int | None = None, device=None, seed: int = 0, dim: int | None = None):
        self.G, self.s1, self.n, self.symmetric = None, None, 0, True

    def add(self, z: torch.Tensor) -> None:
        if self.G is None:
            self.G = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
        add_upper_gram(self.G, z)
        self.symmetric = False
        s = z.float().sum(0).double()
        self.s1 = s if self.s1 is None else self.s1.add_(s)
        self.n += z.shape[0]

    def gram(self) -> torch.Tensor:
        self._mirror()
        return self.G

    def _mirror(self) -> None:
        if not self.symmetric:
            mirror_upper(self.G)
            self.symmetric = True

    def cpu(self):
        """Free the accelerator once the layer is done (stored as float32 on the host)."""
        self._mirror()
        self.G = self.G.float().cpu()
        self.s1 = self.s1.cpu()
        return self


class TSQRAccumulator(GramAccumulator):
    """R ← qr([R; Z_b]).R: exact and stable (slower); gram() = RᵀR."""

    kind = "tsqr"

    def add(self, z: torch.Tensor) -> None:
        zf = z.double()
        stacked = zf if self.G is None else torch.cat([self.G, zf])
        self.G = torch.linalg.qr(stacked, mode="r").R
        s = zf.sum(0)
        self.s1 = s if self.s1 is None else self.s1 + s
        self.n += z.shape[0]

    def gram(self) -> torch.Tensor:
        return self.G.T @ self.G


def sketch_rows(dim, n: int) -> int:
    """Rows of a sketch of a width-``n`` site: ``dim`` rows, ``"<k>x"`` = k × n rows, or None = 4 × n."""
    if dim is None:
        return 4 * n
    if isinstance(dim, str) and dim.endswith("x"):
        return max(1, int(round(float(dim[:-1]) * n)))
    return int(dim)


class SketchAccumulator(GramAccumulator):
    """S [Z 1] with m = dim rows (``sketch_rows``): ``countsketch`` (each token to one random row with a random
    sign, O(N·n)) or ``gaussian`` (dense N(0, 1/m) S). The ones column is sketched with the activations, so the
    centred Gram comes from one sketch: with F = (S[Z 1])ᵀ(S[Z 1]) = [[A, a], [aᵀ, c]], the centred estimate is
    the Schur complement A − a aᵀ/c (positive semi-definite, like the exact ZᵀZ − N μμᵀ it estimates).
    gram() returns it plus the exact N μμᵀ, so ``centered`` recovers the Schur complement and the uncentred
    product stays a consistent, PSD estimate of ZᵀZ. (Sketching Z alone and subtracting the exact mean term
    leaves the sketch's noise on the mean direction, where FFN activations carry most of their energy: the
    centred estimate is then indefinite and the least-squares fold explodes.)"""

    def __init__(self, n: int | None = None, device=None, seed: int = 0, dim: int | None = None,
                 kind: str = "countsketch"):
        super().__init__()
        self.kind, self.m = kind, dim
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def add(self, z: torch.Tensor) -> None:
        zf = z.float()
        N, n = zf.shape
        m = sketch_rows(self.m, n)
        za = torch.cat([zf, zf.new_ones(N, 1)], 1)
        if self.G is None:
            self.G = torch.zeros(m, n + 1, dtype=torch.float32, device=z.device)
        if self.kind == "countsketch":
            rows = torch.randint(0, m, (N,), generator=self.gen).to(z.device)
            signs = (torch.randint(0, 2, (N,), generator=self.gen) * 2 - 1).to(zf)
            self.G.index_add_(0, rows, za * signs[:, None])
        else:
            S = torch.randn(m, N, generator=self.gen).to(zf) / m ** 0.5
            self.G.add_(S @ za)
        s = zf.sum(0).double()
        self.s1 = s if self.s1 is None else self.s1 + s
        self.n += N

    def gram(self) -> torch.Tensor:
        A = self.G.double()
        F = A.T @ A
        n = F.shape[0] - 1
        a, c = F[:n, n], float(F[n, n])
        schur = F[:n, :n] - torch.outer(a, a) / max(c, 1e-300)
        return schur + torch.outer(self.s1, self.s1) / max(self.n, 1)


class BlockSketchAccumulator(GramAccumulator):
    """The block Gaussian sketch: each calibration sequence's activations Z_s are replaced by S_s Z_s with a fresh
    S_s of ``dim`` rows, N(0, 1/dim) entries; gram() = Σ_s (S_s Z_s)ᵀ(S_s Z_s) ≈ ZᵀZ."""

    kind, per_sequence = "gaussian_block", True

    def __init__(self, n: int | None = None, device=None, seed: int = 0, dim: int | None = None):
        super().__init__()
        self.m = dim or 100
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def add(self, z: torch.Tensor, lengths: list[int] | None = None) -> None:
        """z: (N, n) rows sequence by sequence; lengths: tokens per sequence (None: one block)."""
        zf = z.float()
        for block in zf.split(lengths or [zf.shape[0]]):
            S = torch.randn(self.m, block.shape[0], generator=self.gen).to(zf) / self.m ** 0.5
            A = (S @ block).double()
            self.G = A.T @ A if self.G is None else self.G.add_(A.T @ A)
        s = zf.sum(0).double()
        self.s1 = s if self.s1 is None else self.s1.add_(s)
        self.n += zf.shape[0]


def make_accumulator(kind: str, dim: int | None = None, seed: int = 0):
    if kind == "gram":
        return GramAccumulator()
    if kind == "tsqr":
        return TSQRAccumulator()
    if kind in ("countsketch", "gaussian"):
        return SketchAccumulator(dim=dim, seed=seed, kind=kind)
    if kind == "gaussian_block":
        return BlockSketchAccumulator(dim=dim, seed=seed)
    raise ValueError(f"unknown sketch kind '{kind}'; choose gram, tsqr, countsketch, gaussian or gaussian_block")
