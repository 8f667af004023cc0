"""Netlists of the equilibrium transformer block (tiny sizes), for SPICE cross-checks.

`block_netlist(model, inputs)` writes the block's force for one sample as a circuit:

    tau dz/dt = x_in - (1 + c) z + Attn(LN_a z) + FFN(LN_f z)

* one state node "z<t>_<c>" per state entry (T * C nodes), capacitance tau G and leak (1 + c) G
  (G = `conductance`, the conductance of a unit coefficient of F, as in `analogeq.hardware`);
* the drive x_in: an input node "x<t>_<c>" at x_in volts and a VCCS of gm = G into the state node;
* the branch outputs (attn.o, ffn.down) are crossbars: a VCCS of gm = G W[c, i] from each branch
  signal into each state node, their biases from a 1 V rail "one";
* everything in between is behavioural periphery (aux nodes, SPICE B sources): LayerNorm (mean,
  centred values, 1 / sqrt(variance + eps) in one node, gain and bias), the q / k / v and ffn.up
  maps (an ideal crossbar read out through a transimpedance stage: a linear expression of its
  inputs),
  qk-norm (RMSNorm per head), the attention logits, softmax (exp of each logit, their sum per row,
  the quotients; no max subtraction: with qk-norm the logits are bounded by sqrt(head_dim) times
  the gains), the value mix, and tanh-GELU.

State order: row-major (t, c), i.e. `z.reshape(batch, T * C)` of the model's state. With the
default tau the force `netlist.force(tau=tau)` equals `model.force(inputs)` up to float64 rounding
(tests/test_spice.py checks it at random states). `ffn_netlist` is the FFN path alone (attention
switched off: x_in - (1 + c) z + FFN(LN_f z)).

Only the digital model (hardware=None) is supported: a hardware model's force carries per-node
time constants, read noise and converters that this netlist does not describe.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .circuits.netlist import Const, Expr, Netlist, V, sqrt, tanh
from .circuits.netlist import exp as sp_exp
from .model import EquilibriumTransformer

__all__ = ["block_netlist", "ffn_netlist", "state_names", "BRANCHES"]

BRANCHES = ("attn", "ffn")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def state_names(T: int, C: int) -> list[str]:
    """State node names in row-major (t, c) order."""
    return [f"z{t}_{c}" for t in range(T) for c in range(C)]


def _f(x: Tensor | float) -> float:
    return float(x)


def _linear_expr(weight: Tensor, bias: Tensor | None, row: int, ins: list[str]) -> Expr:
    """sum_j W[row, j] V(ins[j]) + b[row] as one expression (every term kept: one structure)."""
    terms: list[Expr] = [Const(_f(weight[row, j])) * V(n) for j, n in enumerate(ins)]
    if bias is not None:
        terms.append(Const(_f(bias[row])))
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _sum(exprs: list[Expr]) -> Expr:
    out = exprs[0]
    for e in exprs[1:]:
        out = out + e
    return out


def _layer_norm(net: Netlist, prefix: str, ins: list[str], norm: Any, t: int) -> list[str]:
    """LayerNorm aux nodes of token t; returns the output node names."""
    C = len(ins)
    eps = float(norm.eps)
    m = net.add_aux(f"{prefix}m{t}", _sum([V(n) for n in ins]) * Const(1.0 / C))
    d = [net.add_aux(f"{prefix}d{t}_{c}", V(n) - V(m)) for c, n in enumerate(ins)]
    # variance and 1/sqrt in one node: the sqrt argument is a sum of squares + eps for any
    # Newton iterate of SPICE (a separate variance node can be driven negative there)
    var = _sum([V(x) * V(x) for x in d]) * Const(1.0 / C)
    r = net.add_aux(f"{prefix}r{t}", Const(1.0) / sqrt(var + Const(eps)))
    w, b = norm.weight.detach(), norm.bias.detach()
    return [net.add_aux(f"{prefix}y{t}_{c}", V(d[c]) * V(r) * Const(_f(w[c])) + Const(_f(b[c])))
            for c in range(C)]


def _rms_norm(net: Netlist, prefix: str, ins: list[str], norm: Any) -> list[str]:
    """RMSNorm over `ins` (one head); returns the output node names."""
    n = len(ins)
    r = net.add_aux(f"{prefix}r", Const(1.0) / sqrt(
        _sum([V(x) * V(x) for x in ins]) * Const(1.0 / n) + Const(float(norm.eps))))
    w = norm.weight.detach()
    return [net.add_aux(f"{prefix}y{d}", V(x) * V(r) * Const(_f(w[d])))
            for d, x in enumerate(ins)]


def _check_model(model: Any, branches: tuple[str, ...]) -> None:
    if not isinstance(model, EquilibriumTransformer):
        raise TypeError(f"model must be an EquilibriumTransformer, got {type(model).__name__}")
    if model.hardware is not None:
        raise ValueError(
            "block_netlist needs the digital model (hardware=None): a hardware model's force has "
            "per-node time constants, read noise and converters that the netlist does not model"
        )
    bad = [b for b in branches if b not in BRANCHES]
    if bad or not branches:
        raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {branches!r}")


def block_netlist(
    model: EquilibriumTransformer,
    inputs: Tensor,
    *,
    sample: int = 0,
    branches: tuple[str, ...] = BRANCHES,
    tau: float = 1e-7,
    conductance: float = 1e-5,
    z0: Tensor | None = None,
    name: str | None = None,
) -> Netlist:
    """The block's force on sample `sample` of `inputs` as a netlist (module docstring).

    Args:
        model: a digital `EquilibriumTransformer` (any dtype; weights read as float64).
        inputs: token ids (batch, T) or features, as for `model.force`.
        sample: which row of the batch.
        branches: ("attn", "ffn") for the whole block, ("ffn",) for the FFN path.
        tau: time unit of F, seconds (> 0); conductance: G, siemens (> 0).
        z0: initial state (T, C) or (1, T, C), volts; default x_in / (1 + c) (the model's).
    Returns a Netlist whose `force(tau=tau)` on (batch, T * C) states equals the model's force.
    """
    branches = tuple(branches)
    _check_model(model, branches)
    if not (isinstance(tau, (int, float)) and tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a finite number of seconds > 0, got {tau!r}")
    if not (isinstance(conductance, (int, float)) and conductance > 0):
        raise ValueError(f"conductance must be a finite number of siemens > 0, got {conductance!r}")
    cfg = model.config
    force = model.force(inputs)
    B, T, C = force.shape
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < B:
        raise ValueError(f"sample must be an int in [0, {B}), got {sample!r}")
    with torch.no_grad():
        x_in = force.x_in[sample].to(torch.float64)
        if z0 is None:
            start = x_in / cfg.leak
        else:
            start = torch.as_tensor(z0, dtype=torch.float64).reshape(T, C)
    G = float(conductance)
    net = Netlist(name or f"block T{T} C{C} {'+'.join(branches)}")
    zs = state_names(T, C)
    for t in range(T):
        for c in range(C):
            net.add_input(f"x{t}_{c}", _f(x_in[t, c]))
    out_bias = []
    if "attn" in branches and model.attn.o.bias is not None:
        out_bias.append(model.attn.o.bias.detach())
    if "ffn" in branches and model.ffn.down.bias is not None:
        out_bias.append(model.ffn.down.bias.detach())
    total_bias = sum(b.to(torch.float64) for b in out_bias) if out_bias else None
    has_bias = total_bias is not None and bool((total_bias != 0).any())
    if has_bias:
        net.add_input("one", 1.0)
    for t in range(T):
        for c in range(C):
            net.add_state(zs[t * C + c], capacitance=tau * G, leak=cfg.leak * G,
                          v0=_f(start[t, c]))
    for t in range(T):
        for c in range(C):
            net.add_vccs(f"x{t}_{c}", zs[t * C + c], G, name=f"in{t}_{c}")
    rows = [[zs[t * C + c] for c in range(C)] for t in range(T)]
    with torch.no_grad():
        if "ffn" in branches:
            _ffn(net, model, rows, G)
        if "attn" in branches:
            _attention(net, model, rows, G)
    if has_bias:
        assert total_bias is not None
        for t in range(T):
            for c in range(C):
                if float(total_bias[c]) != 0:
                    net.add_vccs("one", zs[t * C + c], G * float(total_bias[c]),
                                 name=f"bias{t}_{c}")
    return net


def ffn_netlist(model: EquilibriumTransformer, inputs: Tensor, **kwargs: Any) -> Netlist:
    """The FFN path of the block (attention off) as a netlist; see `block_netlist`."""
    kwargs.setdefault("name", None)
    return block_netlist(model, inputs, branches=("ffn",), **kwargs)


def _ffn(net: Netlist, model: EquilibriumTransformer, rows: list[list[str]], G: float) -> None:
    up, down = model.ffn.up, model.ffn.down
    w_up = up.weight.detach().to(torch.float64)
    b_up = None if up.bias is None else up.bias.detach().to(torch.float64)
    w_dn = down.weight.detach().to(torch.float64)
    for t, zs in enumerate(rows):
        ys = _layer_norm(net, "nf", zs, model.ln_ffn, t)
        for j in range(w_up.shape[0]):
            h = net.add_aux(f"fh{t}_{j}", _linear_expr(w_up, b_up, j, ys))
            hv = V(h)
            inner = Const(_SQRT_2_OVER_PI) * (hv + Const(_GELU_CUBIC) * hv * hv * hv)
            g = net.add_aux(f"fg{t}_{j}", Const(0.5) * hv * (Const(1.0) + tanh(inner)))
            for c, z in enumerate(zs):
                if float(w_dn[c, j]) != 0:
                    net.add_vccs(g, z, G * float(w_dn[c, j]), name=f"fd{t}_{c}_{j}")


def _attention(net: Netlist, model: EquilibriumTransformer, rows: list[list[str]],
               G: float) -> None:
    cfg = model.config
    attn = model.attn
    T, C, H, dh = len(rows), cfg.d_model, cfg.n_heads, cfg.head_dim

    def wb(lin: Any) -> tuple[Tensor, Tensor | None]:
        return (lin.weight.detach().to(torch.float64),
                None if lin.bias is None else lin.bias.detach().to(torch.float64))

    (wq, bq), (wk, bk), (wv, bv) = wb(attn.q), wb(attn.k), wb(attn.v)
    w_o = attn.o.weight.detach().to(torch.float64)
    q: list[list[str]] = []
    k: list[list[str]] = []
    v: list[list[str]] = []
    for t, zs in enumerate(rows):
        ys = _layer_norm(net, "na", zs, model.ln_attn, t)
        q.append([net.add_aux(f"aq{t}_{i}", _linear_expr(wq, bq, i, ys)) for i in range(C)])
        k.append([net.add_aux(f"ak{t}_{i}", _linear_expr(wk, bk, i, ys)) for i in range(C)])
        v.append([net.add_aux(f"av{t}_{i}", _linear_expr(wv, bv, i, ys)) for i in range(C)])
        if attn.q_norm is not None and attn.k_norm is not None:
            qn, kn = [], []
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                qn += _rms_norm(net, f"aqn{t}_{h}_", q[t][sl], attn.q_norm)
                kn += _rms_norm(net, f"akn{t}_{h}_", k[t][sl], attn.k_norm)
            q[t], k[t] = qn, kn
    for t in range(T):
        keys = list(range(t + 1)) if cfg.causal else list(range(T))
        mixed: list[list[str]] = []
        for h in range(H):
            sl = range(h * dh, (h + 1) * dh)
            e = []
            for u in keys:
                s = net.add_aux(f"as{h}_{t}_{u}", _sum(
                    [V(q[t][i]) * V(k[u][i]) for i in sl]) * Const(float(attn.scale)))
                e.append(net.add_aux(f"ae{h}_{t}_{u}", sp_exp(V(s))))
            den = net.add_aux(f"aden{h}_{t}", _sum([V(x) for x in e]))
            p = [net.add_aux(f"ap{h}_{t}_{u}", V(x) / V(den)) for u, x in zip(keys, e,
                                                                              strict=True)]
            mixed.append([net.add_aux(f"ao{t}_{i}", _sum(
                [V(pu) * V(v[u][i]) for pu, u in zip(p, keys, strict=True)])) for i in sl])
        outs = [n for head in mixed for n in head]
        for c, z in enumerate(rows[t]):
            for i, o in enumerate(outs):
                if float(w_o[c, i]) != 0:
                    net.add_vccs(o, z, G * float(w_o[c, i]), name=f"ow{t}_{c}_{i}")
