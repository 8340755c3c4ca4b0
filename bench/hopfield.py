"""Hopfield retrieval study: does the GAG update behave like an accelerated Modern Hopfield step?

    python bench/hopfield.py          # writes bench/results_hopfield.md; < 1 min on one CPU core

The paper reads one attention call as one step of a Modern Hopfield network with stored patterns
X (N × d, one pattern per row) and state ξ (queries = keys = values = X):

    dense   ξ ← O_d = softmax(β ξ Xᵀ) X          (Ramsauer et al. 2020)
    sparse  ξ ← O_s = 1.5-entmax(β ξ Xᵀ) X       (Hu et al. 2023)
    PLADIS  ξ ← O_s + λ (O_s − O_d)              gag_combine with ζ = 1, η = ∞
    GAG     ξ ← gag_combine(O_d, O_s; λ, η, ζ)

Every network stores random patterns; every query starts as a stored pattern plus Gaussian noise;
each rule is iterated and the state is compared with the pattern the query came from.

Scale. Every rule above except the η cap is scale-equivariant: multiplying the patterns by s and
dividing β by s² multiplies every trajectory by s. So β is given in *unit-norm* units (the scores
are β·cos(ξ, x) when ‖ξ‖ = ‖x‖) and patterns have norm 1, and the capped rules are also run on the
same networks scaled to norm √d (the norm of a vector with unit-variance entries), where the
paper's absolute η = 15 means something else. States' norms matter a second way: the scores grow
with ‖ξ‖, so a rule that changes the state's norm also changes the next step's effective β.

Metrics per query (ε = 0.05):
  direction error  ‖ξ/‖ξ‖ − x/‖x‖‖ (x the target pattern)
  retrieved        final direction error < ε and x is the stored pattern nearest to ξ in angle
  reached, steps   some step has direction error < ε; mean first such step over those that do
  settled          final relative change ‖ξ_T − ξ_{T−1}‖/‖ξ_T‖ < 1e-3, else the state still moves
                   (oscillates: all rules here are bounded, see the report); "dir-settled" applies
                   the same test to ξ/‖ξ‖
  one-step error   median direction error after a single update (what one attention layer does)
  max ‖ξ‖/‖x‖      median over queries of the largest state norm after the first update
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gag_core import alpha_entmax, gag_combine  # noqa: E402

EPSILON = 0.05
SETTLE_TOL = 1e-3
ALPHA = 1.5
DIMS = (32, 64, 128)
COUNTS = (8, 64, 256, 1000)
NOISES = (1.0, 2.0)
BETAS = (2.0, 4.0, 8.0, 16.0)
SWEEP_BETAS = (2.0, 4.0)


# ------------------------------------------------------------------------------ the networks

@dataclass(frozen=True)
class Networks:
    """A batch of B networks with the same d and N.

    patterns (B, N, d) float64, rows of norm `norm`; queries (B, Q, d) initial states;
    targets (B, Q) index of each query's pattern; beta (B, 1, 1) inverse temperature in unit-norm
    units (the scores use β / norm²)."""
    patterns: torch.Tensor
    queries: torch.Tensor
    targets: torch.Tensor
    beta: torch.Tensor
    norm: float

    def scaled(self, norm: float) -> "Networks":
        """The same networks with patterns and queries multiplied by norm / self.norm."""
        factor = norm / self.norm
        return Networks(self.patterns * factor, self.queries * factor, self.targets, self.beta,
                        float(norm))

    @property
    def target_patterns(self) -> torch.Tensor:
        return torch.gather(self.patterns, 1,
                            self.targets.unsqueeze(-1).expand(-1, -1, self.patterns.shape[-1]))


def make_networks(dim: int, count: int, betas, noises, seeds, *, queries: int = 32,
                  norm: float = 1.0) -> Networks:
    """One network per (seed, β, noise): random unit directions scaled to `norm`; queries are
    target + a random perturbation of norm noise·norm (cos(query, target) ≈ 1/√(1 + noise²)).
    The patterns depend on (seed, d, N) only, so rules and β are compared on the same patterns."""
    if dim < 2 or count < 1 or queries < 1:
        raise ValueError(f"dim must be >= 2, count >= 1, queries >= 1; got dim={dim}, "
                         f"count={count}, queries={queries}")
    pats, qs, tgs, bs = [], [], [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + dim * 1009 + count)
        patterns = torch.randn(count, dim, generator=generator, dtype=torch.float64)
        patterns = patterns / patterns.norm(dim=-1, keepdim=True) * norm
        for beta in betas:
            for noise in noises:
                targets = torch.randint(0, count, (queries,), generator=generator)
                kick = torch.randn(queries, dim, generator=generator, dtype=torch.float64)
                kick = kick / kick.norm(dim=-1, keepdim=True) * (noise * norm)
                pats.append(patterns)
                qs.append(patterns[targets] + kick)
                tgs.append(targets)
                bs.append(float(beta))
    beta = torch.tensor(bs, dtype=torch.float64).view(-1, 1, 1)
    return Networks(torch.stack(pats), torch.stack(qs), torch.stack(tgs), beta, float(norm))


# ------------------------------------------------------------------------------- the updates

@dataclass(frozen=True)
class Rule:
    """An update rule: "dense", "sparse", or "combine" (gag_combine with scale/eta/zeta).
    eta_relative: η is given as a multiple of the pattern norm instead of an absolute value."""
    name: str
    kind: str
    scale: float = 0.0
    eta: float = math.inf
    zeta: float = 0.0
    eta_relative: bool = False

    def eta_for(self, nets: Networks) -> float:
        return self.eta * nets.norm if self.eta_relative else self.eta


DENSE = Rule("dense (softmax)", "dense")
SPARSE = Rule("sparse (1.5-entmax)", "sparse")


def pladis(scale: float) -> Rule:
    return Rule(f"PLADIS λ={scale:g}", "combine", scale, math.inf, 1.0)


def gag(scale: float = 10.0, eta: float = 15.0, zeta: float = 0.0, *, relative: bool = False,
        name: str | None = None) -> Rule:
    eta_text = ("∞" if math.isinf(eta) else f"{eta:g}") + ("·‖x‖" if relative and math.isfinite(eta) else "")
    return Rule(name or f"GAG λ={scale:g} η={eta_text} ζ={zeta:g}", "combine", scale, eta, zeta,
                relative)


def retrievals(state: torch.Tensor, nets: Networks) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense and sparse retrievals of states (B, Q, d): both (B, Q, d)."""
    scores = (nets.beta / nets.norm ** 2) * (state @ nets.patterns.transpose(1, 2))
    return torch.softmax(scores, dim=-1) @ nets.patterns, alpha_entmax(scores, ALPHA) @ nets.patterns


def combine(rule: Rule, dense: torch.Tensor, sparse: torch.Tensor, nets: Networks) -> torch.Tensor:
    if rule.kind == "dense":
        return dense
    if rule.kind == "sparse":
        return sparse
    return gag_combine(dense, sparse, scale=rule.scale, eta=rule.eta_for(nets), zeta=rule.zeta)


def correction_norm(rule: Rule, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """‖g‖ = ‖Δ_∥ + ζΔ_⊥‖ per query, the quantity the η cap compares with η."""
    delta = sparse - dense
    direction = _unit(sparse)
    parallel = (delta * direction).sum(-1, keepdim=True) * direction
    return (parallel + rule.zeta * (delta - parallel)).norm(dim=-1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-300)


# ------------------------------------------------------------------------------ the dynamics

@dataclass
class Outcome:
    """Per-query results of iterating one rule on a batch of networks, flattened to (B·Q,)."""
    retrieved: torch.Tensor
    steps: torch.Tensor          # first step with direction error < ε, or -1
    settled: torch.Tensor
    dir_settled: torch.Tensor
    one_step_error: torch.Tensor
    max_norm_ratio: torch.Tensor
    cap_active: float            # share of updates in which η shortened the correction

    @staticmethod
    def cat(outcomes: list["Outcome"]) -> "Outcome":
        fields = {name: torch.cat([getattr(o, name) for o in outcomes])
                  for name in ("retrieved", "steps", "settled", "dir_settled", "one_step_error",
                               "max_norm_ratio")}
        weights = [o.steps.numel() for o in outcomes]
        cap = sum(o.cap_active * w for o, w in zip(outcomes, weights)) / sum(weights)
        return Outcome(cap_active=cap, **fields)


def iterate(rule: Rule, nets: Networks, steps: int = 30) -> Outcome:
    target_dir = _unit(nets.target_patterns)
    state = nets.queries
    first_hit = torch.full(nets.targets.shape, -1, dtype=torch.long)
    max_norm = torch.zeros(nets.targets.shape, dtype=torch.float64)
    one_step = None
    capped = 0
    eta = rule.eta_for(nets) if rule.kind == "combine" else math.inf
    for t in range(1, steps + 1):
        dense, sparse = retrievals(state, nets)
        if math.isfinite(eta):
            capped += int((correction_norm(rule, dense, sparse) > eta).sum())
        previous, state = state, combine(rule, dense, sparse, nets)
        error = (_unit(state) - target_dir).norm(dim=-1)
        if one_step is None:
            one_step = error
        first_hit[(first_hit < 0) & (error < EPSILON)] = t
        max_norm = torch.maximum(max_norm, state.norm(dim=-1) / nets.norm)
    final_error = (_unit(state) - target_dir).norm(dim=-1)
    nearest = (_unit(state) @ _unit(nets.patterns).transpose(1, 2)).argmax(-1)
    finite = torch.isfinite(state).all(dim=-1)
    change = (state - previous).norm(dim=-1) / state.norm(dim=-1).clamp(min=1e-300)
    dir_change = (_unit(state) - _unit(previous)).norm(dim=-1)
    flat = lambda x: x.reshape(-1)
    return Outcome(retrieved=flat((final_error < EPSILON) & (nearest == nets.targets) & finite),
                   steps=flat(first_hit), settled=flat((change < SETTLE_TOL) & finite),
                   dir_settled=flat((dir_change < SETTLE_TOL) & finite),
                   one_step_error=flat(one_step), max_norm_ratio=flat(max_norm),
                   cap_active=capped / (steps * nets.targets.numel()))


def discrepancy_alignment(nets: Networks) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, at the initial state: cos(O_s − O_d, x − O_d), whether the sparse–dense
    discrepancy points from the dense retrieval towards the stored pattern x; and the same for
    GAG's parallel part Δ_∥ (along O_s)."""
    dense, sparse = retrievals(nets.queries, nets)
    wanted = nets.target_patterns - dense
    delta = sparse - dense
    direction = _unit(sparse)
    parallel = (delta * direction).sum(-1, keepdim=True) * direction
    cos = lambda a, b: (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-300)
    return cos(delta, wanted).reshape(-1), cos(parallel, wanted).reshape(-1)


# --------------------------------------------------------------------------------- summaries

@dataclass
class Summary:
    success: float
    reached: float
    mean_steps: float
    settled: float
    dir_settled: float
    one_step: float
    max_norm: float
    cap_active: float


def summarise(outcome: Outcome) -> Summary:
    hit = outcome.steps[outcome.steps >= 0].double()
    mean = lambda x: x.double().mean().item()
    return Summary(success=mean(outcome.retrieved), reached=mean(outcome.steps >= 0),
                   mean_steps=hit.mean().item() if hit.numel() else math.nan,
                   settled=mean(outcome.settled), dir_settled=mean(outcome.dir_settled),
                   one_step=outcome.one_step_error.double().median().item(),
                   max_norm=outcome.max_norm_ratio.double().median().item(),
                   cap_active=outcome.cap_active)


def network_grid(betas, *, seeds, queries, dims=DIMS, counts=COUNTS, noises=NOISES,
                 norm: float | str = 1.0) -> list[Networks]:
    """One batch per (d, N); norm="sqrt_d" scales each batch's patterns to √d."""
    grid = []
    for d in dims:
        for n in counts:
            nets = make_networks(d, n, betas, noises, seeds, queries=queries)
            grid.append(nets.scaled(math.sqrt(d)) if norm == "sqrt_d" else nets.scaled(norm))
    return grid


def run(rule: Rule, grid: list[Networks], steps: int) -> Summary:
    return summarise(Outcome.cat([iterate(rule, nets, steps) for nets in grid]))


# ------------------------------------------------------------------------------------ report

def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _num(x: float, fmt: str = ".2f") -> str:
    return "–" if math.isnan(x) else format(x, fmt)


COLUMNS = ("retrieved", "reached ε", "mean steps to ε", "settled", "dir-settled",
           "one-step dir err", "max ‖ξ‖/‖x‖", "η cap active")


def cells(s: Summary) -> list[str]:
    return [_pct(s.success), _pct(s.reached), _num(s.mean_steps), _pct(s.settled),
            _pct(s.dir_settled), _num(s.one_step, ".3f"), _num(s.max_norm), _pct(s.cap_active)]


def table(first_column: str, rows: list[tuple[str, Summary]]) -> list[str]:
    head = [first_column, *COLUMNS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join([label, *cells(s)]) + " |" for label, s in rows]
    return out + [""]


def study(*, seeds, queries: int, steps: int, log=print) -> tuple[list[str], dict]:
    """Run every section; returns the markdown lines and the raw summaries (for tests)."""
    started = time.time()
    results: dict = {}
    lines: list[str] = []
    grids = {beta: network_grid([beta], seeds=seeds, queries=queries) for beta in BETAS}
    pooled = f"pooled over d ∈ {list(DIMS)}, N ∈ {list(COUNTS)}, noise ∈ {list(NOISES)}, " \
             f"seeds {list(seeds)}, {queries} queries each"

    # 1. The rules side by side at each β, unit-norm patterns.
    main_rules = [DENSE, SPARSE, pladis(1.0), pladis(10.0), gag(name="GAG λ=10 η=15 ζ=0 (paper)"),
                  gag(zeta=0.5), gag(eta=0.1, relative=True)]
    lines += ["## 1. Rules compared (unit-norm patterns)", "",
              f"Each row: {pooled}; {steps} updates.", ""]
    for beta in BETAS:
        rows = [(rule.name, run(rule, grids[beta], steps)) for rule in main_rules]
        results[("main", beta)] = dict(rows)
        lines += [f"### β = {beta:g}", ""] + table("rule", rows)
    log(f"section 1 done ({time.time() - started:.0f}s)")

    # 2. Does the discrepancy point at the stored pattern?
    lines += ["## 2. Does the sparse–dense discrepancy point towards the stored pattern?", "",
              "cos(Δ, x − O_d) with Δ = O_s − O_d at the noisy query (first step), and the same for "
              "GAG's parallel part Δ_∥; share of queries with a positive cosine.", "",
              "| β | mean cos(Δ, x−O_d) | cos > 0 | mean cos(Δ_∥, x−O_d) | cos > 0 |",
              "|---|---|---|---|---|"]
    for beta in BETAS:
        full, par = zip(*(discrepancy_alignment(n) for n in grids[beta]))
        full, par = torch.cat(full), torch.cat(par)
        full, par = full[torch.isfinite(full)], par[torch.isfinite(par)]
        results[("align", beta)] = (full.mean().item(), (full > 0).double().mean().item(),
                                    par.mean().item(), (par > 0).double().mean().item())
        a = results[("align", beta)]
        lines.append(f"| {beta:g} | {a[0]:.3f} | {_pct(a[1])} | {a[2]:.3f} | {_pct(a[3])} |")
    lines.append("")
    log(f"section 2 done ({time.time() - started:.0f}s)")

    # 3. λ sweep: where does each rule stop settling?
    lambdas = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
    families = [("PLADIS", lambda l: pladis(l)),
                ("GAG η=∞ ζ=0", lambda l: gag(l, math.inf, 0.0)),
                ("GAG η=0.1·‖x‖ ζ=0", lambda l: gag(l, 0.1, 0.0, relative=True)),
                ("GAG η=∞ ζ=0.5", lambda l: gag(l, math.inf, 0.5))]
    lines += ["## 3. λ sweep (unit-norm patterns)", "",
              "Each cell: retrieved / settled / dir-settled / mean steps to ε. At unit norm the "
              "paper's η = 15 never binds (‖g‖ ≤ ‖Δ‖ ≤ 2), so GAG η=15 equals the η=∞ column. "
              "No rule diverges: every output is a bounded combination of stored patterns "
              "(‖O‖ ≤ (1+2λ)·max‖x‖, and ≤ ‖O_s‖ + λη with the cap); failure shows as a state "
              "that keeps moving or ends at the wrong pattern.", ""]
    for beta in SWEEP_BETAS:
        lines += [f"### β = {beta:g}", "",
                  "| λ | " + " | ".join(name for name, _ in families) + " |",
                  "|---|" + "---|" * len(families)]
        for lam in lambdas:
            row = []
            for name, make in families:
                s = run(make(lam), grids[beta], steps)
                results[("lambda", beta, name, lam)] = s
                row.append(f"{_pct(s.success)} / {_pct(s.settled)} / {_pct(s.dir_settled)} / "
                           f"{_num(s.mean_steps)}")
            lines.append(f"| {lam:g} | " + " | ".join(row) + " |")
        lines.append("")
    log(f"section 3 done ({time.time() - started:.0f}s)")
    sweep_beta = 4.0

    # 4. ζ sweep at the paper's λ.
    lines += [f"## 4. ζ sweep (λ = 10, η = ∞, β = {sweep_beta:g}; ζ = 1 is PLADIS λ = 10)", ""]
    rows = []
    for zeta in (0.0, 0.25, 0.5, 0.75, 1.0):
        s = run(gag(10.0, math.inf, zeta), grids[sweep_beta], steps)
        results[("zeta", zeta)] = s
        rows.append((f"ζ = {zeta:g}", s))
    lines += table("ζ", rows)
    log(f"section 4 done ({time.time() - started:.0f}s)")

    # 5. η and the pattern norm.
    lines += [f"## 5. η against the pattern norm (λ = 10, ζ = 0, β = {sweep_beta:g})", "",
              "Rows with η·‖x‖ scale η with the pattern norm (identical results at any norm); "
              "rows with an absolute η = 15 are run at pattern norm 1 and at √d "
              "(η/‖x‖ = 2.7, 1.9, 1.3 for d = 32, 64, 128).", ""]
    rows = []
    for eta in (0.01, 0.03, 0.1, 0.3, 1.0):
        rule = gag(10.0, eta, 0.0, relative=True)
        rows.append((f"η = {eta:g}·‖x‖", run(rule, grids[sweep_beta], steps)))
    rows.append(("η = ∞", run(gag(10.0, math.inf, 0.0), grids[sweep_beta], steps)))
    rows.append(("η = 15, ‖x‖ = 1", run(gag(10.0, 15.0, 0.0), grids[sweep_beta], steps)))
    sqrt_grid = [n.scaled(math.sqrt(n.patterns.shape[-1])) for n in grids[sweep_beta]]
    rows.append(("η = 15, ‖x‖ = √d", run(gag(10.0, 15.0, 0.0), sqrt_grid, steps)))
    for label, s in rows:
        results[("eta", label)] = s
    lines += table("η", rows)
    log(f"section 5 done ({time.time() - started:.0f}s)")
    return lines, results


def findings(results: dict) -> list[str]:
    """The headline comparisons, with the numbers this run measured."""
    main2, main4 = results[("main", 2.0)], results[("main", 4.0)]
    paper = "GAG λ=10 η=15 ζ=0 (paper)"
    eta = {label: s for (kind, label), s in
           ((k, v) for k, v in results.items() if k[0] == "eta")}
    align = results[("align", 4.0)]
    return [
        "## Findings (numbers from this run)", "",
        f"- **The discrepancy points at the stored pattern.** At β = 4, cos(O_s − O_d, x − O_d) "
        f"averages {align[0]:.2f} (positive for {_pct(align[1])} of queries).",
        f"- **Extrapolating along it rescues retrieval at low β** (β = 2, where the dense update "
        f"collapses to a mixture): retrieved dense {_pct(main2[DENSE.name].success)}, sparse "
        f"{_pct(main2[SPARSE.name].success)}, PLADIS λ=1 {_pct(main2['PLADIS λ=1'].success)}, "
        f"PLADIS λ=10 {_pct(main2['PLADIS λ=10'].success)}, GAG paper "
        f"{_pct(main2[paper].success)}. GAG and PLADIS at the same λ do about equally well here: "
        f"the gain comes from the extrapolation (the state's norm grows, which raises the next "
        f"step's effective β), not from the projection.",
        f"- **It reaches the pattern in fewer updates.** β = 4: mean steps to ε sparse "
        f"{_num(main4[SPARSE.name].mean_steps)}, GAG paper {_num(main4[paper].mean_steps)}, "
        f"PLADIS λ=10 {_num(main4['PLADIS λ=10'].mean_steps)} (at equal retrieval rates).",
        f"- **The projection keeps the direction; PLADIS does not.** With ζ = 0 the output lies on "
        f"O_s's line, so GAG's one-step direction error equals the sparse update's "
        f"({_num(main4[paper].one_step, '.3f')}); PLADIS λ=10 pushes it to "
        f"{_num(main4['PLADIS λ=10'].one_step, '.3f')}, and its direction never settles "
        f"(dir-settled {_pct(main4['PLADIS λ=10'].dir_settled)} vs GAG "
        f"{_pct(main4[paper].dir_settled)}).",
        f"- **At the paper's λ = 10 and η = 15 the iteration does not converge: the state's norm "
        f"oscillates** (settled {_pct(main4[paper].settled)} at β = 4), because η = 15 never "
        f"binds unless the retrieved vectors are much longer than 15 (cap active "
        f"{_pct(eta['η = 15, ‖x‖ = √d'].cap_active)} even at ‖x‖ = √d ≤ 11.3). A cap that binds "
        f"does stabilise it, as the paper's weak-contraction argument says: η = 0.01·‖x‖ settles "
        f"{_pct(eta['η = 0.01·‖x‖'].settled)}, η = 0.03·‖x‖ {_pct(eta['η = 0.03·‖x‖'].settled)}, "
        f"with the same retrieval rate and still fewer steps than sparse "
        f"({_num(eta['η = 0.01·‖x‖'].mean_steps)}). η is a length in the units of the value "
        f"vectors: whether 15 binds depends on the model's value norms per head.",
        "- The norm oscillation of ζ = 0 has a simple cause: ‖ξ_{t+1}‖ = ‖O_s‖(1 + λ·c(‖ξ_t‖)) "
        "with c = 1 − ⟨O_d, O_s⟩/‖O_s‖², and c falls as ‖ξ‖ (hence the effective β) grows; "
        "the fixed point of that map is unstable once λ·|dc/d‖ξ‖| > 1.",
        "",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results_hopfield.md")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.process_time()
    lines, results = study(seeds=range(args.seeds), queries=args.queries, steps=args.steps)
    lines = findings(results) + lines
    header = ["# Hopfield retrieval study", "",
              f"Command: `python bench/hopfield.py --seeds {args.seeds} --queries {args.queries} "
              f"--steps {args.steps}` (float64, 1.5-entmax, ε = {EPSILON}, settle tolerance "
              f"{SETTLE_TOL:g}; {time.process_time() - started:.0f} s of CPU time, one thread).", ""]
    args.out.write_text("\n".join(header + lines) + "\n")
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
