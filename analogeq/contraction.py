"""Contraction certificates: a provable bound on Lip(N), what it proves, and the evidence beside it.

The block's force is F(z) = -(1 + c) z + N(z) with N(z) = x_in + Attn(LN_a z) + FFN(LN_f z)
(docs/physics.md section 1). If ||dN/dz(z)||_2 <= L at every state then (docs/physics.md section 5)

* mu_2(J(z)) <= -(1 + c) + L: for L < 1 + c the flow contracts, the fixed point is unique and every
  trajectory reaches it at rate >= 1 + c - L (||F(z(t))|| <= exp(-(1 + c - L) t) ||F(z(0))||);
* explicit Euler z <- z + eps F(z) contracts with factor q(eps) = |1 - eps (1 + c)| + eps L < 1
  for eps < 2 / (1 + c + L) (||F(z_{k+1})|| <= q ||F(z_k)||).

`lipschitz_bound(model)` computes such an L from spectral norms (`torch.linalg.matrix_norm(ord=2)`,
float64) and constants; `certify(...)` puts it beside empirical figures and gives a verdict.
Norms: the state z of one sample is the (T, C) matrix with the Frobenius (Euclidean) norm, the
norm in which `analogeq.probes.lognorm` measures mu_2.

Derivation (every inequality below is used as written in the code)
------------------------------------------------------------------
LayerNorm, per token: y = g * n + b, n = P z / s, P = I - 11^T / C, s = sqrt(var(z) + eps).
Its Jacobian is diag(g) (I - n n^T / C) P / s; (I - n n^T / C) has eigenvalues in (0, 1] because
|n|^2 / C = var / (var + eps) < 1, and ||P|| = 1, so ||J_LN|| <= max|g| / s, which is
<= max|g| / sqrt(v + eps) at every token whose centred variance is >= v. With v = 0 this is the
global constant max|g| / sqrt(norm_eps): about 316 max|g| for norm_eps = 1e-5. A LayerNorm has no
useful global Lipschitz bound without a variance floor (its Jacobian really is 1/sqrt(eps) at
var = 0), so the bound is also offered on a *region* (`var_floor` > 0: every token of z has
var >= var_floor). The output is bounded everywhere:
|y_t| <= R_x = max|g| sqrt(C) + ||b||_2, since |n| < sqrt(C).

Attention, one head of size d on x = LN_a(z) (per-token norms <= R_x): q_t = rho_q(Wq_h x_t + bq_h),
k_s likewise, v_s = Wv_h x_s + bv_h, a_ts = sigma q_t . k_s (sigma = attn_gain / sqrt(d)),
p_t = softmax over the attended s (causal: s <= t), y_t = sum_s p_ts v_s.
* With qk-norm rho(u) = g * u / sqrt(mean(u^2) + eps): |rho(u)| <= max|g| sqrt(d) =: B_q, and
  ||J_rho|| <= max|g| / sqrt(m + eps) =: r_q where mean(u^2) >= m (m = `qk_floor`, 0 = global:
  again 1/sqrt(eps) near u = 0). Without qk-norm rho = identity, B_q = ||Wq_h|| R_x + |bq_h|,
  r_q = 1.
  B_v = ||Wv_h|| R_x + |bv_h|. The logits are bounded: |a_ts| <= A = sigma B_q B_k.
* Bounded logits bound every probability: p_ts <= 1 / (1 + (n_t - 1) e^{-2A}) with n_t attended
  tokens, so every column sum of the attention matrix P is <= kappa = sum_{t<T} 1 / (1 + t e^{-2A})
  (causal) or T / (1 + (T - 1) e^{-2A}) (not causal); rows sum to 1, hence
  ||P||_2 <= sqrt(||P||_1 ||P||_inf) <= sqrt(kappa).
* dy_t = sum_s p_ts dv_s + sum_s p_ts (v_s - vbar_t) da_ts (the softmax Jacobian is
  diag(p) - p p^T). The first term is P dV: norm <= sqrt(kappa) |dV|. The second is a covariance
  under p_t: by Cauchy-Schwarz <= sqrt(Var(v)) sqrt(sum_s p_ts da_ts^2) with Var(v) <= B_v^2, and
  da_ts = sigma (dq_t . k_s + q_t . dk_s). Summing over t (column sums <= kappa for the dk part):
  |dY| <= sqrt(kappa) |dV| + sigma B_v B_k |dQ| + sqrt(kappa) sigma B_v B_q |dK|.
* Heads stack: sum_h |dV_h|^2 = |Wv dX|^2 <= ||Wv||^2 |dX|^2 (and the same for Q, K with r_q, r_k),
  taking the worst head's constants. So Lip(X -> Y) <= sqrt(kappa) ||Wv|| + max_h(sigma B_v B_k)
  r_q ||Wq|| + max_h(sqrt(kappa) sigma B_v B_q) r_k ||Wk||, and the branch is ||Wo|| times that,
  times the LayerNorm factor. kappa grows with T: the bound is for T tokens (default: context).

FFN: ||W_down|| * max|gelu_tanh'| * ||W_up|| times the LayerNorm factor, with max|gelu_tanh'| =
`GELU_TANH_SLOPE` (gelu'(x) + gelu'(-x) = 1, maximum 1.128993... at x ~ 1.4185; rounded up).

L = attention term + FFN term (x_in does not depend on z). Biases only enter through B_q, B_k, B_v.
The bound is a bound on ||dN/dz|| at every state of the region, hence a Lipschitz constant on
every convex subset of it; with both floors 0 (the default) the region is everything.

Hardware (`weights="realized"`): the same formula on the weights actually realized on the
crossbars (`AnalogLinear.effective_weight(noisy=True)`: programming error, drift, stuck devices,
IR drop and the current frozen read-noise draw). The hardware force is F / r with per-node
time-constant ratios r, so in units of the mean tau the leak lies in
[(1 + c) / r_max, (1 + c) / r_min] and Lip(N / r) <= L / r_min: it contracts iff
L / r_min < (1 + c) / r_max, at rate (1 + c) / r_max - L / r_min, and
Euler is safe for eps < 2 / ((1 + c) / r_min + L / r_min). Converters (DAC/ADC bits) make the force
piecewise constant: no Lipschitz bound exists (L = inf). With "white" or "ou" read noise the bound
holds for one draw only (said in the notes).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .model import BlockForce, EquilibriumTransformer

__all__ = [
    "GELU_TANH_SLOPE",
    "Bound",
    "Certificate",
    "Verdict",
    "lipschitz_bound",
    "state_floors",
    "certify",
    "attention_kappa",
    "jacobian_norm",
]

GELU_TANH_SLOPE = 1.12899307
"""max_x |d/dx gelu_tanh(x)| = 1.1289930686554... (at x = +-1.4185), rounded up."""

_MAPS = ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.up", "ffn.down")
_WEIGHTS = ("auto", "nominal", "realized")


# ------------------------------------------------------------------------------------------------
# the bound


@dataclass(frozen=True)
class Bound:
    """A provable upper bound on ||dN/dz||_2 over a region of states (module docstring).

    L: the bound (1/time; inf when none exists). leak: 1 + c. T: tokens the bound is for.
    var_floor, qk_floor: the region (0, 0 = every state). weights: "nominal" or "realized".
    terms: {"attention", "ffn"} contributions; factors: every spectral norm and constant used.
    notes: caveats (hardware noise modes, converters).
    """

    L: float
    leak: float
    T: int
    var_floor: float
    qk_floor: float
    weights: str
    terms: dict[str, float]
    factors: dict[str, float]
    notes: tuple[str, ...] = ()

    @property
    def is_global(self) -> bool:
        """True when the region is every state (both floors 0)."""
        return self.var_floor == 0.0 and self.qk_floor == 0.0

    @property
    def contracts(self) -> bool:
        """L < 1 + c: the bound proves contraction (on the region)."""
        return self.L < self.leak

    @property
    def rate(self) -> float:
        """Guaranteed continuous contraction rate 1 + c - L (<= 0: nothing guaranteed)."""
        return self.leak - self.L

    @property
    def eps_safe(self) -> float | None:
        """Largest explicit-Euler step proven to contract, 2 / (1 + c + L); None if not proven."""
        return 2.0 / (self.leak + self.L) if self.contracts else None

    def region(self) -> str:
        if self.is_global:
            return "every state (global)"
        return (f"states with every token's centred variance >= {self.var_floor:.3g} and every "
                f"head's pre-norm mean(q^2), mean(k^2) >= {self.qk_floor:.3g}")

    def text(self) -> str:
        eps = "-" if self.eps_safe is None else f"{self.eps_safe:.4g}"
        return (f"Lip(N) <= L = {self.L:.4g} ({self.weights} weights, T={self.T}; attention "
                f"{self.terms.get('attention', math.nan):.3g}, ffn "
                f"{self.terms.get('ffn', math.nan):.3g}) on {self.region()}; 1 + c = "
                f"{self.leak:.4g}: {'proves' if self.contracts else 'does not prove'} contraction"
                f" (rate {self.rate:.4g}, Euler eps < {eps})")

    def to_dict(self) -> dict[str, Any]:
        return {"L": _num(self.L), "leak": self.leak, "T": self.T, "var_floor": self.var_floor,
                "qk_floor": self.qk_floor, "weights": self.weights, "global": self.is_global,
                "contracts": self.contracts, "rate": _num(self.rate),
                "eps_safe": self.eps_safe, "terms": {k: _num(v) for k, v in self.terms.items()},
                "factors": {k: _num(v) for k, v in self.factors.items()},
                "notes": list(self.notes)}


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _check_model(model: Any, name: str = "model") -> EquilibriumTransformer:
    if not isinstance(model, EquilibriumTransformer):
        raise TypeError(f"{name} must be an EquilibriumTransformer, got {type(model).__name__}")
    return model


def _check_floor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a finite real number >= 0, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite real number >= 0, got {value}")
    return float(value)


def attention_kappa(logit_bound: float, T: int, causal: bool) -> float:
    """Upper bound on every column sum of a T x T attention matrix whose logits lie in
    [-logit_bound, logit_bound] (module docstring); at most T."""
    if not math.isfinite(logit_bound):
        return float(T)
    w = math.exp(-2.0 * logit_bound)
    if causal:
        return min(float(T), math.fsum(1.0 / (1.0 + t * w) for t in range(T)))
    return min(float(T), T / (1.0 + (T - 1) * w))


def _weights(model: EquilibriumTransformer,
             realized: bool) -> dict[str, tuple[Tensor, Tensor | None]]:
    """(weight, bias) in float64 for every map of the force, nominal or as realized."""
    from .hardware import HardwareLinear

    out = {}
    for name in _MAPS:
        m = model.get_submodule(name)
        if realized and isinstance(m, HardwareLinear):
            w = m.analog.effective_weight(noisy=True)
        else:
            w = m.weight
        b = getattr(m, "bias", None)
        out[name] = (w.detach().to(torch.float64), None if b is None else b.detach().double())
    return out


def _spec(w: Tensor) -> float:
    return float(torch.linalg.matrix_norm(w, ord=2))


def _resolve_weights(model: EquilibriumTransformer, weights: Any) -> str:
    if not isinstance(weights, str) or weights not in _WEIGHTS:
        raise ValueError(f"weights must be one of {_WEIGHTS}, got {weights!r}")
    if weights == "auto":
        return "nominal" if model.hardware is None else "realized"
    if weights == "realized" and model.hardware is None:
        raise ValueError("weights='realized' needs a hardware model (hardware=HardwareConfig(...))")
    return weights


@torch.no_grad()
def lipschitz_bound(model: EquilibriumTransformer, *, T: int | None = None, var_floor: float = 0.0,
                    qk_floor: float = 0.0, weights: str = "auto") -> Bound:
    """A provable upper bound L on ||dN/dz||_2 of the block (module docstring for the derivation).

    Args:
        model: an `EquilibriumTransformer` (digital or on hardware).
        T: sequence length the bound is for (1 <= T <= context; default context: the bound grows
            with T and the one for the context covers every shorter sequence).
        var_floor: region: every token of z has centred variance >= var_floor (>= 0; 0 = global).
        qk_floor: region (qk-norm models): every head's pre-norm queries and keys have
            mean square >= qk_floor (>= 0; 0 = global).
        weights: "nominal" (the parameters), "realized" (the crossbars' effective weights, a
            hardware model only) or "auto" (realized on hardware, else nominal).

    Returns: a `Bound` (float64 arithmetic; L may be inf when none exists).
    """
    model = _check_model(model)
    cfg = model.config
    if T is None:
        T = cfg.context
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int in [1, context={cfg.context}] or None, got "
                        f"{type(T).__name__}")
    if not 1 <= T <= cfg.context:
        raise ValueError(f"T must be an int in [1, context={cfg.context}], got {T}")
    var_floor = _check_floor("var_floor", var_floor)
    qk_floor = _check_floor("qk_floor", qk_floor)
    which = _resolve_weights(model, weights)
    notes: list[str] = []
    hw = model.hardware
    if which == "realized":
        if hw.dac_bits is not None or hw.adc_bits is not None:
            notes.append("converters (DAC/ADC) in the loop make the force piecewise constant: it "
                         "has no Lipschitz bound")
        if hw.read_noise in ("white", "ou"):
            notes.append(f"read_noise={hw.read_noise!r}: the weights change between reads; the "
                         "bound holds for the current draw only")
        elif hw.read_noise == "quenched":
            notes.append("quenched read noise: the bound is for the current frozen draw (settle "
                         "with resample_read_noise=False to settle on it)")
    W = _weights(model, which == "realized")
    eps = cfg.norm_eps
    C, H, d = cfg.d_model, cfg.n_heads, cfg.head_dim

    def ln_factor(ln: Any) -> tuple[float, float]:
        g = ln.weight.detach().double()
        b = ln.bias.detach().double()
        gmax = float(g.abs().max())
        lam = gmax / math.sqrt(var_floor + eps)
        r_x = gmax * math.sqrt(C) + float(torch.linalg.vector_norm(b))
        return lam, r_x

    lam_a, r_a = ln_factor(model.ln_attn)
    lam_f, _ = ln_factor(model.ln_ffn)
    wq, bq = W["attn.q"]
    wk, bk = W["attn.k"]
    wv, bv = W["attn.v"]
    sigma = model.attn.scale
    if cfg.qk_norm:
        gq = float(model.attn.q_norm.weight.detach().abs().max())  # type: ignore[union-attr]
        gk = float(model.attn.k_norm.weight.detach().abs().max())  # type: ignore[union-attr]
        r_q, r_k = gq / math.sqrt(qk_floor + eps), gk / math.sqrt(qk_floor + eps)
    else:
        r_q = r_k = 1.0
    c_q = c_k = kappa_max = logit_max = 0.0
    for h in range(H):
        rows = slice(h * d, (h + 1) * d)

        def head_bound(w: Tensor, b: Tensor | None, rows: slice = rows) -> float:
            bn = 0.0 if b is None else float(torch.linalg.vector_norm(b[rows]))
            return _spec(w[rows]) * r_a + bn

        if cfg.qk_norm:
            b_q, b_k = gq * math.sqrt(d), gk * math.sqrt(d)
        else:
            b_q, b_k = head_bound(wq, bq), head_bound(wk, bk)
        b_v = head_bound(wv, bv)
        A = sigma * b_q * b_k
        kappa = attention_kappa(A, T, cfg.causal)
        c_q = max(c_q, sigma * b_v * b_k)
        c_k = max(c_k, math.sqrt(kappa) * sigma * b_v * b_q)
        kappa_max = max(kappa_max, kappa)
        logit_max = max(logit_max, A)
    n_q, n_k, n_v = _spec(wq), _spec(wk), _spec(wv)
    n_o, n_up, n_down = _spec(W["attn.o"][0]), _spec(W["ffn.up"][0]), _spec(W["ffn.down"][0])
    core = math.sqrt(kappa_max) * n_v + c_q * r_q * n_q + c_k * r_k * n_k
    attn = lam_a * n_o * core
    ffn = lam_f * GELU_TANH_SLOPE * n_up * n_down
    L = attn + ffn
    if notes and notes[0].startswith("converters"):
        L = math.inf
    factors = {"ln_attn": lam_a, "ln_ffn": lam_f, "R_x": r_a, "logit_bound": logit_max,
               "kappa": kappa_max, "attention_core": core, "r_q": r_q, "r_k": r_k,
               "norm_q": n_q, "norm_k": n_k, "norm_v": n_v, "norm_o": n_o, "norm_up": n_up,
               "norm_down": n_down, "gelu_slope": GELU_TANH_SLOPE}
    return Bound(L=L, leak=cfg.leak, T=T, var_floor=var_floor, qk_floor=qk_floor, weights=which,
                 terms={"attention": attn, "ffn": ffn}, factors=factors, notes=tuple(notes))


@torch.no_grad()
def state_floors(model: EquilibriumTransformer, z: Tensor, *, weights: str = "auto"
                 ) -> tuple[float, float]:
    """The region floors that hold at the states z (batch, T, C): (min over tokens of the centred
    variance of z, min over heads and tokens of the pre-norm mean(q^2), mean(k^2); inf without
    qk-norm). Measured, not proven: a region bound built from them holds *at these states*."""
    model = _check_model(model)
    if not isinstance(z, Tensor) or z.ndim != 3 or z.shape[2] != model.config.d_model:
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must have shape (batch, T, C={model.config.d_model}), got {got}")
    zd = z.detach().to(torch.float64)
    var = zd.var(dim=-1, unbiased=False)
    cfg = model.config
    if not cfg.qk_norm:
        return float(var.min()), math.inf
    W = _weights(model, _resolve_weights(model, weights) == "realized")
    ln = model.ln_attn
    x = torch.nn.functional.layer_norm(zd, (cfg.d_model,), ln.weight.detach().double(),
                                       ln.bias.detach().double(), cfg.norm_eps)
    floors = []
    for name in ("attn.q", "attn.k"):
        w, b = W[name]
        u = torch.nn.functional.linear(x, w, b)
        u = u.view(*u.shape[:-1], cfg.n_heads, cfg.head_dim)
        floors.append(float(u.square().mean(-1).min()))
    return float(var.min()), min(floors)


# ------------------------------------------------------------------------------------------------
# empirical figures


def jacobian_norm(fn: Any, z: Tensor, *, iters: int = 40, seed: int = 0) -> Tensor:
    """A lower estimate of ||d fn / dz||_2 per sample by power iteration on J^T J (one JVP and one
    VJP per iteration). fn maps (batch, ...) -> same shape with independent samples. Returns
    (batch,) float64: ||J v|| / ||v|| for the final iterate (<= the true norm up to rounding)."""
    gen = torch.Generator().manual_seed(seed)
    z = z.detach()
    v = torch.randn(z.shape, generator=gen, dtype=torch.float64).to(z)
    dims = tuple(range(1, z.ndim))

    def unit(x: Tensor) -> Tensor:
        return x / torch.linalg.vector_norm(x, dim=dims, keepdim=True).clamp_min(1e-300)

    v = unit(v)
    with torch.no_grad():
        _, vjp = torch.func.vjp(fn, z)
        est = torch.zeros(z.shape[0], dtype=torch.float64)
        for _ in range(iters):
            jv = torch.func.jvp(fn, (z,), (v,))[1]
            est = torch.linalg.vector_norm(jv, dim=dims).double().cpu()
            v = unit(vjp(jv)[0])
    return est


class Verdict(enum.Enum):
    """What a certificate concludes."""

    CERTIFIED = "certified"
    """The bound proves contraction (L < 1 + c) and no empirical figure contradicts it."""
    VACUOUS = "vacuous"
    """The bound is >= 1 + c: it proves nothing (the model may still contract)."""
    VIOLATED = "violated"
    """An empirical figure exceeds a proven bound: a bug in the bound or in the model."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Certificate:
    """The proven figures and their empirical counterparts, side by side (`text()`, `to_dict()`).

    Proven (time in the force's units): `lipschitz` (bound on Lip(N) of the force as given, e.g.
    L / r_min on hardware), `leak_min`, `leak_max`, `contracts`, `rate` = leak_min - lipschitz,
    `eps_safe` = 2 / (leak_max + lipschitz) (None unless it contracts), `lognorm_bound` = -rate.
    Empirical: `lognorm_max` (max over the sampled states of mu_2(J) from `probes.lognorm`, a
    lower estimate of the true maximum), `jacobian_norm_max` (max of ||dN/dz|| by power iteration,
    a lower estimate of Lip(N)), `euler_eps`, `euler_factor_bound` q(eps), `euler_factor_max`
    (worst measured ||F_{k+1}|| / ||F_k||), `measured_rate` (-log(euler_factor_max) / eps),
    `settle_status`. `local` is the region bound at the sampled states (model certificates), with
    `local_lognorm_bound`. `violations` lists each empirical figure above its bound.
    """

    verdict: Verdict
    lipschitz: float
    leak_min: float
    leak_max: float
    contracts: bool
    rate: float
    eps_safe: float | None
    lognorm_bound: float
    lognorm_max: float
    jacobian_norm_max: float
    n_states: int
    euler_eps: float | None
    euler_factor_bound: float | None
    euler_factor_max: float | None
    measured_rate: float | None
    settle_status: str
    bound: Bound | None = None
    local: Bound | None = None
    local_lognorm_bound: float | None = None
    violations: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        f = _fmt
        lines = [f"contraction certificate: {str(self.verdict).upper()}"]
        if self.bound is not None:
            lines.append(f"  bound   {self.bound.text()}")
        lines += [
            "  figure                     proven            measured (sampled)",
            f"  Lip(N)                     <= {f(self.lipschitz):<14} "
            f">= {f(self.jacobian_norm_max)}  (power iteration)",
            f"  log-norm mu_2(J)           <= {f(self.lognorm_bound):<14} max {f(self.lognorm_max)}"
            f" over {self.n_states} states",
            f"  contraction rate           >= {f(self.rate):<14} "
            f"{f(self.measured_rate)} (Euler, eps {f(self.euler_eps)})",
            f"  Euler factor per step      <= {f(self.euler_factor_bound):<14} "
            f"max {f(self.euler_factor_max)}",
            f"  Euler eps proven safe      <  {f(self.eps_safe)}",
            f"  leak 1 + c in [{f(self.leak_min)}, {f(self.leak_max)}]; settle: "
            f"{self.settle_status}",
        ]
        if self.local is not None:
            lines.append(f"  local   {self.local.text()}")
            lines.append(f"          log-norm there <= {f(self.local_lognorm_bound)} (the sampled "
                         "states are in this region; its invariance is not proven)")
        if self.verdict is Verdict.VACUOUS:
            lines.append("  the bound is >= 1 + c: it proves nothing about this model (which may "
                         "still contract; see the measured figures)")
        for v in self.violations:
            lines.append(f"  VIOLATION: {v}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ("lipschitz", "leak_min", "leak_max", "contracts", "rate", "eps_safe",
                  "lognorm_bound", "lognorm_max", "jacobian_norm_max", "n_states", "euler_eps",
                  "euler_factor_bound", "euler_factor_max", "measured_rate", "settle_status",
                  "local_lognorm_bound"):
            v = getattr(self, k)
            out[k] = _num(v) if isinstance(v, float) else v
        out["verdict"] = str(self.verdict)
        out["bound"] = None if self.bound is None else self.bound.to_dict()
        out["local"] = None if self.local is None else self.local.to_dict()
        out["violations"] = list(self.violations)
        out["notes"] = list(self.notes)
        out.update(self.extra)
        return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}"


# ------------------------------------------------------------------------------------------------
# certify


def _leak_range(force: Any) -> tuple[float, float]:
    leak = getattr(force, "leak", None)
    if leak is None:
        raise TypeError("force must expose `leak` (F = -leak z + nonlinear(z)) to be certified")
    if isinstance(leak, Tensor):
        return float(leak.min()), float(leak.max())
    if isinstance(leak, bool) or not isinstance(leak, int | float):
        raise TypeError(f"force.leak must be a real number or a tensor, got {type(leak).__name__}")
    return float(leak), float(leak)


def _euler_factors(res: Any, floor: float) -> float | None:
    """Worst ||F_{k+1}|| / ||F_k|| over steps and samples whose force residual is above floor."""
    tr = res.trace
    if tr.sample_state_norm is None or tr.sample_residual.shape[0] < 2:
        return None
    fn = (tr.sample_residual * tr.sample_state_norm).double()  # (n + 1, batch): ||F(z_k)||
    g = tr.sample_residual.double()
    prev, nxt = fn[:-1], fn[1:]
    ok = (g[:-1] > floor) & (g[1:] > 0) & (prev > 0)
    # a finished sample keeps its final values: identical entries are not steps
    ok &= (tr.sample_residual[1:] != tr.sample_residual[:-1])
    if not bool(ok.any()):
        return None
    return float((nxt / prev)[ok].max())


def certify(
    target: Any,
    inputs: Tensor | None = None,
    *,
    lipschitz: float | None = None,
    states: Tensor | None = None,
    samples: int = 4,
    spread: float = 0.5,
    batch: int = 2,
    euler_steps: int = 60,
    euler_eps: float | None = None,
    weights: str = "auto",
    local: bool = True,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    power_iters: int = 30,
) -> Certificate:
    """Certify contraction of a model or a force, with the empirical figures beside the proof.

    Args:
        target: an `EquilibriumTransformer` (the bound from `lipschitz_bound`), a `BlockForce`
            (model and inputs from it; a `HardwareForce` includes the node time constants), or any
            force with `leak` and `nonlinear(z)` together with `lipschitz` (your proven bound on
            Lip(nonlinear)) and `states`.
        inputs: the model's inputs for a model target (default: `batch` seeded random token ids of
            length context, or standard-normal features for a feature model).
        lipschitz: a bound on Lip(N) to certify (required for a plain force; for a model it
            replaces the computed bound).
        states: (batch, ...) states to sample around (default: the settled fixed point).
        samples: perturbed states per sample (>= 0): z* + s * rms(z*) * xi, s up to `spread`.
        spread: largest relative perturbation (> 0).
        euler_steps: explicit-Euler steps for the measured rate (>= 1).
        euler_eps: their step size (> 0); default half the proven safe step, or 0.1 when the
            bound proves nothing.
        weights: "auto", "nominal" or "realized" (see `lipschitz_bound`).
        local: also compute the region bound at the sampled states (model targets).
        seed: int for the inputs, perturbations and power iterations.
        dtype: None (the state's) or torch.float32/float64 for the log-norm products.
        power_iters: power iterations for ||dN/dz|| (>= 1).

    Returns: a `Certificate` (verdict CERTIFIED, VACUOUS or VIOLATED).
    """
    from . import probes
    from .integrators import ExplicitEuler, settle

    for name, value, low in (("samples", samples, 0), ("batch", batch, 1),
                             ("euler_steps", euler_steps, 1), ("power_iters", power_iters, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int >= {low}, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value}")
    for name, value in (("spread", spread), ("euler_eps", euler_eps), ("lipschitz", lipschitz)):
        if value is None and name != "spread":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a finite real number > 0, got {type(value).__name__}")
        if not (math.isfinite(value) and value > 0) and not (name == "lipschitz" and value == 0):
            raise ValueError(f"{name} must be a finite real number > 0, got {value}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(seed)
    notes: list[str] = []
    model: EquilibriumTransformer | None = None
    bound: Bound | None = None
    if isinstance(target, EquilibriumTransformer):
        model = target
        if inputs is None:
            inputs = _default_inputs(model, batch, gen)
        force = model.force(inputs)
    elif isinstance(target, BlockForce):
        model, force = target.model, target
        if inputs is not None:
            raise ValueError("inputs must be None when target is a bound force (it has its own)")
    else:
        if not callable(target) or not callable(getattr(target, "nonlinear", None)):
            raise TypeError(
                "target must be an EquilibriumTransformer, a BlockForce, or a force with `leak` "
                f"and `nonlinear(z)`; got {type(target).__name__}"
            )
        if lipschitz is None:
            raise ValueError("lipschitz (your proven bound on Lip(nonlinear)) is required to "
                             "certify a plain force")
        if states is None:
            raise ValueError("states (a (batch, ...) tensor) are required to certify a plain force")
        force = target
    leak_min, leak_max = _leak_range(force)

    # the proven figures, in the force's own units
    r_min = 1.0
    if model is not None:
        T = force.shape[1]
        if lipschitz is None:
            bound = lipschitz_bound(model, T=T, weights=weights)
            notes += list(bound.notes)
            L_raw = bound.L
        else:
            L_raw = float(lipschitz)
            notes.append("lipschitz given by the caller: the structural bound was not computed")
        ratio = getattr(force, "ratio", None)
        if isinstance(ratio, Tensor):
            r_min = float(ratio.min())
            notes.append(f"node time constants tau_i / tau in [{r_min:.4g}, "
                         f"{float(ratio.max()):.4g}]: leak and Lip(N) scale per node")
        L = L_raw / r_min
    else:
        L = float(lipschitz)  # type: ignore[arg-type]
    contracts = L < leak_min
    rate = leak_min - L
    eps_safe = 2.0 / (leak_max + L) if contracts else None
    lognorm_bound = -rate

    # states: the settled point (or the caller's) and perturbations around it
    settle_status = "-"
    if states is None:
        assert model is not None
        res = settle(force, model.initial_state(force), "anderson")
        settle_status = str(res.status)
        base = res.z
    else:
        if not isinstance(states, Tensor) or not states.is_floating_point():
            raise TypeError("states must be a real floating torch.Tensor (batch, ...)")
        if not bool(torch.isfinite(states).all()):
            raise ValueError("states must be finite (they hold NaN or inf)")
        base = states.detach()
    dims = tuple(range(1, base.ndim))
    rms = base.square().mean(dim=dims, keepdim=True).sqrt()
    pts = [base]
    for j in range(samples):
        s = spread * (j + 1) / samples
        xi = torch.randn(base.shape, generator=gen, dtype=torch.float64).to(base)
        pts.append(base + s * rms * xi)
    lognorm_max = jac_max = -math.inf
    unconverged = 0
    for p in pts:
        ln = probes.lognorm(force, p, dtype=dtype, seed=seed, info=True)
        ok = ln.value[ln.converged]
        unconverged += int(ln.value.numel() - ok.numel())
        if ok.numel():
            lognorm_max = max(lognorm_max, float(ok.max()))
        jac_max = max(jac_max, float(jacobian_norm(force.nonlinear, p, iters=power_iters,
                                                   seed=seed).max()))
    if unconverged:
        notes.append(f"lognorm did not converge at {unconverged} sampled states")

    # measured decay: explicit Euler from the farthest perturbed states
    eps_run = euler_eps if euler_eps is not None else (0.5 * eps_safe if eps_safe else 0.1)
    q = max(abs(1 - eps_run * leak_min), abs(1 - eps_run * leak_max)) + eps_run * L
    z_start = pts[-1]
    er = settle(force, z_start, ExplicitEuler(eps=eps_run), tol=_tiny_tol(z_start),
                max_steps=euler_steps)
    floor = 1e3 * torch.finfo(z_start.dtype).eps
    factor = _euler_factors(er, floor)
    measured_rate = None if factor is None else -math.log(max(factor, 1e-300)) / eps_run
    Z = torch.cat(pts)

    # local (region) bound at the sampled states
    local_bound = None
    local_ln = None
    if model is not None and local and lipschitz is None:
        vf, qf = state_floors(model, Z, weights=weights)
        local_bound = lipschitz_bound(model, T=force.shape[1], var_floor=max(vf, 0.0),
                                      qk_floor=0.0 if math.isinf(qf) else max(qf, 0.0),
                                      weights=weights)
        local_ln = -(leak_min - local_bound.L / r_min)

    # violations: a measured figure above a proven one
    tol_ln = _slack(Z.dtype if dtype is None else dtype) * (leak_max + min(L, 1e300))
    violations = []
    checks = [("log-norm", lognorm_max, lognorm_bound), ("Lip(N)", jac_max, L)]
    if local_bound is not None and local_ln is not None:
        checks += [("log-norm (region)", lognorm_max, local_ln),
                   ("Lip(N) (region)", jac_max, local_bound.L / r_min)]
    for name, got, limit in checks:
        if math.isfinite(got) and math.isfinite(limit) and got > limit + tol_ln:
            violations.append(f"measured {name} {got:.6g} > proven {limit:.6g}")
    if factor is not None and math.isfinite(q) and factor > q * (1 + 1e-3) + 1e-6:
        violations.append(f"measured Euler factor {factor:.6g} > proven {q:.6g} (eps {eps_run:g})")
    if violations:
        verdict = Verdict.VIOLATED
    elif contracts:
        verdict = Verdict.CERTIFIED
    else:
        verdict = Verdict.VACUOUS
    return Certificate(
        verdict=verdict, lipschitz=L, leak_min=leak_min, leak_max=leak_max, contracts=contracts,
        rate=rate, eps_safe=eps_safe, lognorm_bound=lognorm_bound, lognorm_max=lognorm_max,
        jacobian_norm_max=jac_max, n_states=int(Z.shape[0]), euler_eps=eps_run,
        euler_factor_bound=q, euler_factor_max=factor, measured_rate=measured_rate,
        settle_status=settle_status, bound=bound, local=local_bound,
        local_lognorm_bound=local_ln, violations=tuple(violations), notes=tuple(notes),
        extra={"euler_status": str(er.status)},
    )


def _slack(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-4


def _tiny_tol(z: Tensor) -> float:
    return 10 * torch.finfo(z.dtype).eps


def _default_inputs(model: EquilibriumTransformer, batch: int, gen: torch.Generator) -> Tensor:
    cfg = model.config
    if cfg.input_dim is None:
        return torch.randint(0, cfg.vocab_size, (batch, cfg.context), generator=gen)  # type: ignore[arg-type]
    return torch.randn(batch, cfg.context, cfg.input_dim, generator=gen, dtype=model.dtype)
