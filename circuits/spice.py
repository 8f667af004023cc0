"""SPICE export of a `Netlist`, the real ngspice in batch mode, and a cross-check against analogeq.

Deck (`to_spice`), one element per line, SI units, floats written with full precision:

    C_<state> <state> 0 <C> ic=<v0>          capacitor of a state node, its initial voltage
    R_<state> <state> 0 <1/G_leak>           leak conductance (omitted when 0)
    V_<input> <input> 0 DC <volts>           input node
    B_<aux> <aux> 0 V=<expr>                 aux node (behavioural voltage source)
    R<name> <a> <b> <1/g>                    conductance
    G<name> 0 <out> <ctrl> 0 <gm>            linear VCCS: gm V(ctrl) flows into out
    B<name> 0 <out> I=<expr>                 behavioural current source into out
    .options filetype=ascii numdgt=15 reltol=... abstol=... vntol=... chgtol=... trtol=...
    .tran <tstep> <tstop> 0 <tmax> uic       transient from the capacitors' ic= values
    .ic V(<node>)=<volts> ...                state v0 and the aux nodes' values at v0 (the
                                             starting point of ngspice's Newton at t = 0)
    .save V(<state>) ...                     (default: the state nodes only)

ngspice lets current flow into a G/B source's first terminal and out of its second, so `0 out`
injects into `out`. `from_spice` parses such a deck back into a Netlist (the round trip is exact:
`to_spice(from_spice(deck)) == deck` for every deck `to_spice` writes).

Tolerances. ngspice's truncation-error control takes max(reltol |x|, abstol) per quantity, and the
charge of a 1 pF node at 1 V is 1e-12 C, far below ngspice's default chgtol (1e-14) and abstol
(1e-12 A) only by a factor ~100: with the defaults a nanoamp-level error is "within tolerance". The
defaults here are therefore tight (reltol 1e-6, abstol 1e-15 A, vntol 1e-9 V, chgtol 1e-20 C,
trtol 1, gear integration) and the time step is capped at tstop / 2000, which the tests and
`benchmarks/spice.py` measure to meet 1e-3 V along the trajectory and 1e-4 V at the fixed point.

`run_ngspice` runs `ngspice -b -r out.raw deck.cir` in a `tempfile.TemporaryDirectory` (removed
afterwards; everything is read into memory), with a timeout, and parses the ASCII raw file with
numpy. A missing binary raises `NgspiceNotFoundError` naming the Debian/Ubuntu package (`ngspice`),
a failed run `NgspiceError` with ngspice's own messages.

`verify` runs one circuit both ways: the torchdiffeq reference (dopri5, rtol 1e-10, atol 1e-12,
float64) at ngspice's own time points, the analogeq fixed point (settle with tol 1e-12), and the
ngspice transient, and reports the largest differences.
"""

from __future__ import annotations

import ast
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .netlist import GROUND, Const, Expr, Func, Netlist, Var, as_expr
from .periphery import _check_positive as _check_pos  # (value, name) -> float > 0

__all__ = [
    "to_spice",
    "from_spice",
    "run_ngspice",
    "parse_raw",
    "SpiceResult",
    "NgspiceError",
    "NgspiceNotFoundError",
    "ngspice_path",
    "ngspice_version",
    "verify",
    "VerifyReport",
    "DECK_DEFAULTS",
    "TRAJECTORY_TARGET",
    "FIXED_POINT_TARGET",
]

DECK_DEFAULTS: dict[str, Any] = {
    "reltol": 1e-6,
    "abstol": 1e-15,
    "vntol": 1e-9,
    "chgtol": 1e-20,
    "trtol": 1.0,
    "method": "gear",
}
"""ngspice .options written by `to_spice` (see the module docstring for why so tight)."""
TRAJECTORY_TARGET = 1e-3
"""Largest allowed |V_spice - V_analogeq| along the trajectory, volts."""
FIXED_POINT_TARGET = 1e-4
"""Largest allowed |V_spice(t_end) - z*| at the fixed point, volts."""
_METHODS = ("gear", "trap")
_APT_HINT = "install the Debian/Ubuntu package: apt-get install -y ngspice"


class NgspiceError(RuntimeError):
    """ngspice failed (its own messages are in the text) or could not be run."""


class NgspiceNotFoundError(NgspiceError):
    """The ngspice binary is not on PATH."""


# ------------------------------------------------------------------------------------------------
# writing


def _num(x: float) -> str:
    return repr(float(x))


def to_spice(
    netlist: Netlist,
    tstop: float,
    *,
    tstep: float | None = None,
    tmax: float | None = None,
    save: str = "state",
    reltol: float = DECK_DEFAULTS["reltol"],
    abstol: float = DECK_DEFAULTS["abstol"],
    vntol: float = DECK_DEFAULTS["vntol"],
    chgtol: float = DECK_DEFAULTS["chgtol"],
    trtol: float = DECK_DEFAULTS["trtol"],
    method: str = DECK_DEFAULTS["method"],
) -> str:
    """The ngspice deck of `netlist` with a transient analysis from its v0 to `tstop` seconds.

    Args:
        tstop: end time, seconds (> 0).
        tstep: print step (> 0); default tstop / 2000.
        tmax: largest internal step (> 0); default tstep.
        save: "state" (the state node voltages only: small output) or "all".
        reltol, abstol (A), vntol (V), chgtol (C), trtol: ngspice tolerances (> 0).
        method: "gear" or "trap" (ngspice's integration method).
    Returns the deck text (ends with ".end\\n"). The netlist is validated first.
    """
    if not isinstance(netlist, Netlist):
        raise TypeError(f"netlist must be a Netlist, got {type(netlist).__name__}")
    netlist.validate()
    tstop = _check_pos(tstop, "tstop")
    tstep = tstop / 2000 if tstep is None else _check_pos(tstep, "tstep")
    tmax = tstep if tmax is None else _check_pos(tmax, "tmax")
    opts = {"reltol": reltol, "abstol": abstol, "vntol": vntol, "chgtol": chgtol,
            "trtol": trtol}
    for k, v in opts.items():
        _check_pos(v, k)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if save not in ("state", "all"):
        raise ValueError(f"save must be 'state' or 'all', got {save!r}")
    g = netlist.graph
    c = netlist.counts()
    lines = [
        netlist.name,
        f"* analogeq netlist: {c['state']} state, {c['input']} input, {c['aux']} aux nodes; "
        f"{c['devices']} elements",
    ]
    for n in netlist.state_nodes:
        d = g.nodes[n]
        lines.append(f"C_{n} {n} 0 {_num(d['capacitance'])} ic={_num(d['v0'])}")
        if d["leak"] > 0:
            lines.append(f"R_{n} {n} 0 {_num(1.0 / d['leak'])}")
    for n in netlist.input_nodes:
        lines.append(f"V_{n} {n} 0 DC {_num(g.nodes[n]['voltage'])}")
    for n in netlist._aux_order():
        lines.append(f"B_{n} {n} 0 V={g.nodes[n]['expr'].to_spice()}")
    for name, d in netlist.devices.items():
        if d["kind"] == "conductance":
            lines.append(f"R{name} {d['a']} {d['b']} {_num(1.0 / d['g'])}")
        elif d["kind"] == "vccs":
            lines.append(f"G{name} 0 {d['out']} {d['ctrl']} 0 {_num(d['gm'])}")
        elif d["kind"] == "current":
            lines.append(f"B{name} 0 {d['out']} I={d['expr'].to_spice()}")
    lines.append(".options filetype=ascii numdgt=15 "
                 + " ".join(f"{k}={_num(v)}" for k, v in opts.items()) + f" method={method}")
    lines.append(f".tran {_num(tstep)} {_num(tstop)} 0 {_num(tmax)} uic")
    lines.extend(_ic_lines(netlist))
    if save == "state":
        lines.append(".save " + " ".join(f"V({n})" for n in netlist.state_nodes))
    lines.append(".end")
    return "\n".join(lines) + "\n"


def _ic_lines(netlist: Netlist) -> list[str]:
    """.ic V(node)=value for every state node (its v0) and aux node (its value at v0).

    The capacitors' ic= already fix the state; the aux values are the exact solution of the
    algebraic nodes at t = 0, which ngspice's Newton iteration would otherwise have to find from
    0 V (a chain of exp, quotients and square roots can diverge from there).
    """
    pairs = [(n, netlist.graph.nodes[n]["v0"]) for n in netlist.state_nodes]
    if netlist.aux_nodes:
        force = netlist.force(tau=1.0)
        with torch.no_grad():
            aux = force.aux(netlist.initial_state(1))[0].tolist()
        if not all(math.isfinite(a) for a in aux):
            bad = [n for n, a in zip(netlist.aux_nodes, aux, strict=True) if not math.isfinite(a)]
            raise ValueError(f"aux node(s) {bad[:5]} are not finite at the initial state v0")
        pairs += list(zip(netlist.aux_nodes, aux, strict=True))
    return [".ic " + " ".join(f"V({n})={_num(v)}" for n, v in pairs[i:i + 8])
            for i in range(0, len(pairs), 8)]


# ------------------------------------------------------------------------------------------------
# parsing a deck back

_SUFFIX = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "m": 1e-3, "u": 1e-6, "n": 1e-9,
           "p": 1e-12, "f": 1e-15}
_VALUE = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(meg|[tgkmunpf])?[a-z]*$",
                    re.IGNORECASE)


def _value(tok: str, lineno: int) -> float:
    m = _VALUE.match(tok.strip())
    if not m:
        raise ValueError(f"deck line {lineno}: cannot read the number {tok!r}")
    v = float(m.group(1))
    if m.group(2):
        v *= _SUFFIX[m.group(2).lower()]
    return v


def _parse_expr(text: str, lineno: int) -> Expr:
    """A B-source expression (V(node), numbers, + - * /, tanh/exp/sqrt) -> Expr."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"deck line {lineno}: cannot parse the expression {text!r}") from err

    def conv(node: ast.AST) -> Expr:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Const(float(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = conv(node.operand)
            if isinstance(node.op, ast.UAdd):
                return inner
            return Const(-inner.value) if isinstance(inner, Const) else -inner
        if isinstance(node, ast.BinOp):
            a, b = conv(node.left), conv(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a / b}
            for op, fn in ops.items():
                if isinstance(node.op, op):
                    return fn()
            raise ValueError(f"deck line {lineno}: unsupported operator in {text!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
            fname = node.func.id
            arg = node.args[0]
            if fname.upper() == "V":
                if isinstance(arg, ast.Name):
                    return Var(arg.id)
                if isinstance(arg, ast.Constant) and arg.value == 0:
                    return Var(GROUND)
                raise ValueError(f"deck line {lineno}: V() needs a node name in {text!r}")
            return Func(fname.lower(), conv(arg))
        raise ValueError(f"deck line {lineno}: unsupported expression element in {text!r}")

    return conv(tree)


def _join_continuations(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("+") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line[1:].strip())
        else:
            out.append((i, line))
    return out


def from_spice(deck: str) -> Netlist:
    """Parse a deck in the dialect `to_spice` writes (module docstring) into a Netlist.

    The first line is the title; `*` comments, dot-commands (.options, .tran, .save, .ic, .end)
    are skipped. Supported elements: C (to ground, with ic=), R, V (DC, to ground), G (current
    into a node from ground, controlled by a node against ground), B (V= to ground, or I=).
    Anything else raises ValueError naming the line.
    """
    if not isinstance(deck, str):
        raise TypeError(f"deck must be a str, got {type(deck).__name__}")
    lines = _join_continuations(deck)
    if not lines:
        raise ValueError("deck is empty")
    net = Netlist(lines[0][1] or "analogeq circuit")
    caps: list[tuple[int, list[str]]] = []
    leaks: dict[str, float] = {}
    inputs: list[tuple[int, list[str]]] = []
    auxes: dict[str, tuple[int, str]] = {}
    devices: list[tuple[int, list[str], str]] = []
    for lineno, line in lines[1:]:
        if not line or line.startswith("*"):
            continue
        if line.startswith("."):
            if line.lower().startswith(".end") and not line.lower().startswith(".ends"):
                break
            continue
        kind = line[0].upper()
        if kind == "B":
            head, _, expr = line.partition("=")
            toks = head.split()
            if len(toks) != 4 or toks[3].upper() not in ("V", "I"):
                raise ValueError(f"deck line {lineno}: expected 'B<name> n+ n- V=...|I=...'")
            if toks[3].upper() == "V":
                if toks[2] != GROUND:
                    raise ValueError(f"deck line {lineno}: a V= source must end at ground 0")
                auxes[toks[1]] = (lineno, expr)
            else:
                devices.append((lineno, toks, expr))
            continue
        toks = line.split()
        if kind == "C":
            caps.append((lineno, toks))
        elif kind == "V":
            inputs.append((lineno, toks))
        elif kind == "R" and toks[0].startswith("R_") and len(toks) == 4 and toks[2] == GROUND \
                and toks[0][2:] == toks[1]:
            leaks[toks[1]] = 1.0 / _value(toks[3], lineno)
        elif kind in "RG":
            devices.append((lineno, toks, ""))
        else:
            raise ValueError(
                f"deck line {lineno}: unknown element {toks[0]!r}; supported: C, R, V, G, B"
            )
    for lineno, toks in caps:
        if len(toks) < 4 or toks[2] != GROUND:
            raise ValueError(f"deck line {lineno}: expected 'C<name> node 0 value [ic=v0]'")
        v0 = 0.0
        for t in toks[4:]:
            k, _, v = t.partition("=")
            if k.lower() == "ic":
                v0 = _value(v, lineno)
        net.add_state(toks[1], _value(toks[3], lineno), leak=leaks.pop(toks[1], 0.0), v0=v0)
    if leaks:
        raise ValueError(f"leak resistor(s) for unknown state node(s) {sorted(leaks)}")
    for lineno, toks in inputs:
        vals = [t for t in toks[3:] if t.upper() != "DC"]
        if toks[2] != GROUND or len(vals) != 1:
            raise ValueError(f"deck line {lineno}: expected 'V<name> node 0 [DC] value'")
        net.add_input(toks[1], _value(vals[0], lineno))
    parsed = {n: _parse_expr(e, ln) for n, (ln, e) in auxes.items()}
    pending = dict(parsed)
    while pending:  # add aux nodes in dependency order
        ready = [n for n, e in pending.items() if not (e.nodes() & set(pending))]
        if not ready:
            raise ValueError(f"aux nodes form a cycle among {sorted(pending)}")
        for n in ready:
            net.add_aux(n, pending.pop(n))
    for lineno, toks, expr in devices:
        kind, name = toks[0][0].upper(), toks[0][1:]
        if not name or name.lower() in net._dev_lower or not name[0].isalnum():
            name = toks[0]  # hand-written decks: R1 and G1 would both be "1"
        if kind == "R":
            if len(toks) != 4:
                raise ValueError(f"deck line {lineno}: expected 'R<name> a b ohms'")
            net.add_conductance(toks[1], toks[2], 1.0 / _value(toks[3], lineno), name=name)
        elif kind == "G":
            if len(toks) != 6 or toks[4] != GROUND or GROUND not in (toks[1], toks[2]):
                raise ValueError(
                    f"deck line {lineno}: expected 'G<name> 0 out ctrl 0 gm' (or 'out 0 ...')"
                )
            gm = _value(toks[5], lineno)
            if toks[1] == GROUND:
                net.add_vccs(toks[3], toks[2], gm, name=name)
            else:
                net.add_vccs(toks[3], toks[1], -gm, name=name)
        else:
            e = _parse_expr(expr, lineno)
            if toks[1] == GROUND:
                net.add_current(toks[2], e, name=name)
            elif toks[2] == GROUND:
                net.add_current(toks[1], -as_expr(e), name=name)
            else:
                raise ValueError(f"deck line {lineno}: a current source must touch ground 0")
    return net


# ------------------------------------------------------------------------------------------------
# running ngspice


def ngspice_path() -> str | None:
    """The ngspice binary on PATH, or None."""
    return shutil.which("ngspice")


def _require_ngspice(binary: str | None) -> str:
    path = binary or ngspice_path()
    if path is None or shutil.which(path) is None:
        raise NgspiceNotFoundError(f"ngspice was not found on PATH; {_APT_HINT}")
    return path


def ngspice_version(binary: str | None = None) -> str:
    """ngspice's version line, e.g. "ngspice-39"."""
    path = _require_ngspice(binary)
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    for line in out.stdout.splitlines():
        if "ngspice-" in line:
            return line.strip("* ").split(":")[0].strip()
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "ngspice"


@dataclass
class SpiceResult:
    """One ngspice transient.

    time: (n_t,) seconds; names: raw-file variable names (lower case, e.g. "v(x1)");
    data: (n_t, n_vars) values (column 0 is time); deck, log (ngspice's stdout + stderr);
    wall_time (s, the whole subprocess), analysis_time (s, ngspice's own "Total analysis time",
    None if not printed).
    """

    time: np.ndarray
    names: list[str]
    data: np.ndarray
    deck: str
    log: str
    wall_time: float
    analysis_time: float | None = None

    def voltage(self, node: str) -> np.ndarray:
        """V(node) over time, (n_t,) volts."""
        key = f"v({node.lower()})"
        if key not in self.names:
            raise KeyError(f"node {node!r} is not in the output (saved: {self.names[1:8]}...)")
        return self.data[:, self.names.index(key)]

    def voltages(self, nodes: list[str]) -> np.ndarray:
        """(n_t, len(nodes)) volts."""
        return np.stack([self.voltage(n) for n in nodes], axis=1)


def parse_raw(text: str) -> tuple[list[str], np.ndarray]:
    """Parse an ngspice ASCII raw file (one real plot): (variable names, (n_points, n_vars))."""
    head, sep, values = text.partition("Values:")
    if not sep:
        raise NgspiceError("ngspice raw output has no 'Values:' section")
    nvars = npts = None
    names: list[str] = []
    lines = head.splitlines()
    for i, line in enumerate(lines):
        key, _, val = line.partition(":")
        if key.strip() == "No. Variables":
            nvars = int(val)
        elif key.strip() == "No. Points":
            npts = int(val)
        elif key.strip() == "Flags" and "complex" in val:
            raise NgspiceError("complex raw output is not supported (transient only)")
        elif key.strip() == "Variables":
            for vline in lines[i + 1:]:
                parts = vline.split()
                if len(parts) >= 2:
                    names.append(parts[1].lower())
    if nvars is None or npts is None or len(names) != nvars:
        raise NgspiceError("ngspice raw output has a malformed header")
    nums = np.array(values.split(), dtype=np.float64)
    if nums.size != npts * (nvars + 1):
        raise NgspiceError(
            f"ngspice raw output is truncated: {nums.size} numbers for {npts} points of "
            f"{nvars} variables"
        )
    return names, nums.reshape(npts, nvars + 1)[:, 1:]


_ERROR_LINE = re.compile(r"(error|singular|too small|aborted|interrupted)", re.IGNORECASE)


def run_ngspice(
    circuit: Netlist | str,
    tstop: float | None = None,
    *,
    timeout: float = 300.0,
    binary: str | None = None,
    **deck_options: Any,
) -> SpiceResult:
    """Run the real ngspice non-interactively (`-b`) and return the transient.

    Args:
        circuit: a Netlist (written with `to_spice(circuit, tstop, **deck_options)`) or a deck
            text with its own analysis.
        tstop: seconds, required for a Netlist.
        timeout: seconds (> 0) before ngspice is killed (NgspiceError).
        binary: the ngspice executable; default the one on PATH.
    Raises NgspiceNotFoundError (binary missing; names the apt package) or NgspiceError (ngspice
    failed; its messages included).
    """
    path = _require_ngspice(binary)
    if isinstance(circuit, Netlist):
        if tstop is None:
            raise ValueError("tstop (seconds, > 0) is required to simulate a Netlist")
        deck = to_spice(circuit, tstop, **deck_options)
    elif isinstance(circuit, str):
        if deck_options:
            raise TypeError(f"deck options {sorted(deck_options)} need a Netlist, not a deck")
        deck = circuit
    else:
        raise TypeError(f"circuit must be a Netlist or a deck str, got {type(circuit).__name__}")
    timeout = _check_pos(timeout, "timeout")
    with tempfile.TemporaryDirectory(prefix="analogeq-spice-") as tmp:
        Path(tmp, "deck.cir").write_text(deck)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [path, "-b", "-r", "out.raw", "deck.cir"], cwd=tmp, capture_output=True,
                text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise NgspiceError(f"ngspice timed out after {timeout:g} s") from err
        wall = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        raw_path = Path(tmp, "out.raw")
        raw = raw_path.read_text() if raw_path.exists() else ""
    errors = [ln.strip() for ln in proc.stderr.splitlines() if _ERROR_LINE.search(ln)]
    if proc.returncode != 0 or not raw or errors:
        detail = "\n".join(errors or proc.stderr.strip().splitlines()[-10:]
                           or log.strip().splitlines()[-10:])
        raise NgspiceError(f"ngspice failed (exit code {proc.returncode}):\n{detail}")
    names, data = parse_raw(raw)
    if not names or names[0] != "time":
        raise NgspiceError(f"ngspice output is not a transient (first variable {names[:1]})")
    m = re.search(r"Total analysis time \(seconds\) =\s*([0-9.eE+-]+)", log)
    return SpiceResult(data[:, 0].copy(), names, data, deck, log, wall,
                       float(m.group(1)) if m else None)


# ------------------------------------------------------------------------------------------------
# cross-check


@dataclass
class VerifyReport:
    """ngspice vs analogeq on one circuit. Voltages in volts, times in seconds.

    time (n_t,), spice and reference (n_t, n_state): the two trajectories at ngspice's time
    points (reference: torchdiffeq dopri5, rtol 1e-10, atol 1e-12, float64); fixed_point
    (n_state,): analogeq's settled state; max_trajectory_diff = max |spice - reference|;
    fixed_point_diff = max |spice(t_end) - fixed_point|; reference_gap = max |reference(t_end)
    - fixed_point| (how far the circuit still is from rest at tstop: the fixed-point comparison
    means something only when it is small); settle_status, settle_residual (force residual);
    ngspice_wall (whole subprocess), ngspice_analysis (ngspice's own), reference_wall (the
    torchdiffeq trajectory), settle_wall (the fixed point); tau (s) the force's time unit.
    """

    name: str
    counts: dict[str, int]
    tau: float
    time: np.ndarray
    spice: np.ndarray
    reference: np.ndarray
    fixed_point: np.ndarray
    max_trajectory_diff: float
    fixed_point_diff: float
    reference_gap: float
    settle_status: str
    settle_residual: float
    ngspice_wall: float
    ngspice_analysis: float | None
    reference_wall: float
    settle_wall: float
    deck_options: dict[str, Any] = field(default_factory=dict)
    trajectory_target: float = TRAJECTORY_TARGET
    fixed_point_target: float = FIXED_POINT_TARGET

    @property
    def passed(self) -> bool:
        """Both differences within their targets and the settle converged."""
        return (self.max_trajectory_diff <= self.trajectory_target
                and self.fixed_point_diff <= self.fixed_point_target
                and self.settle_status == "converged")

    def to_dict(self) -> dict[str, Any]:
        keys = ("name", "counts", "tau", "max_trajectory_diff", "fixed_point_diff",
                "reference_gap", "settle_status", "settle_residual", "ngspice_wall",
                "ngspice_analysis", "reference_wall", "settle_wall", "deck_options",
                "trajectory_target", "fixed_point_target")
        out = {k: getattr(self, k) for k in keys}
        out["points"] = int(self.time.size)
        out["passed"] = self.passed
        return out

    def summary(self) -> str:
        c = self.counts
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{self.name}: {c['state']} state nodes, {c['devices']} elements, "
            f"{self.time.size} ngspice points over {self.time[-1]:.3g} s "
            f"({self.time[-1] / self.tau:.3g} tau)\n"
            f"  max |trajectory diff| {self.max_trajectory_diff:.2e} V "
            f"(target {self.trajectory_target:.0e})\n"
            f"  max |fixed-point diff| {self.fixed_point_diff:.2e} V "
            f"(target {self.fixed_point_target:.0e}; reference still {self.reference_gap:.1e} V "
            f"from rest at tstop)\n"
            f"  analogeq settle: {self.settle_status}, force residual {self.settle_residual:.1e}\n"
            f"  wall: ngspice {self.ngspice_wall:.3f} s (analysis {self.ngspice_analysis}), "
            f"torchdiffeq trajectory {self.reference_wall:.3f} s, settle {self.settle_wall:.3f} s"
            f"\n  {verdict}"
        )

    def plot(self, path: str | Path, max_nodes: int = 6) -> Path:
        """Trajectories of up to `max_nodes` nodes (both ways) and |difference| over time."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        t = self.time / self.tau
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        k = min(max_nodes, self.spice.shape[1])
        for i in range(k):
            (line,) = ax1.plot(t, self.reference[:, i], lw=1.5, label=f"node {i} analogeq")
            ax1.plot(t, self.spice[:, i], ls="--", lw=1.0, color=line.get_color())
        ax1.set_xlabel("time / tau")
        ax1.set_ylabel("node voltage (V)")
        ax1.set_title(f"{self.name}: analogeq (solid) vs ngspice (dashed)")
        err = np.abs(self.spice - self.reference).max(axis=1)
        ax2.semilogy(t, np.maximum(err, 1e-16), label="max |spice - analogeq|")
        ax2.axhline(self.trajectory_target, color="k", ls=":", label="trajectory target")
        ax2.axhline(self.fixed_point_target, color="r", ls=":", label="fixed-point target")
        ax2.set_xlabel("time / tau")
        ax2.set_ylabel("volts")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def reference_trajectory(netlist: Netlist, times: np.ndarray, *, rtol: float = 1e-10,
                         atol: float = 1e-12, tau: float | str = "node") -> tuple[np.ndarray,
                                                                                  float]:
    """The torchdiffeq (dopri5, float64) trajectory from the netlist's v0 at `times` seconds
    (increasing, >= 0): ((n_t, n_state) volts, wall seconds)."""
    from torchdiffeq import odeint

    force = netlist.force(tau=tau)
    z0 = netlist.initial_state(1)
    t = np.asarray(times, dtype=np.float64) / force.tau
    grid = np.concatenate(([0.0], t)) if t[0] > 0 else t
    t0 = time.perf_counter()
    with torch.no_grad():
        out = odeint(lambda _t, y: force(y), z0, torch.from_numpy(grid), rtol=rtol, atol=atol,
                     method="dopri5")
    wall = time.perf_counter() - t0
    traj = out[:, 0].numpy()
    return (traj[1:] if t[0] > 0 else traj), wall


def verify(
    netlist: Netlist,
    tstop_tau: float = 30.0,
    *,
    timeout: float = 300.0,
    settle_method: str = "anderson",
    settle_tol: float = 1e-12,
    **deck_options: Any,
) -> VerifyReport:
    """Run `netlist` in ngspice and in analogeq and compare (see `VerifyReport`).

    Args:
        tstop_tau: transient length in units of the median node time constant (> 0).
        timeout: ngspice timeout, seconds.
        settle_method: analogeq method for the fixed point, started from the reference
            trajectory's end (so that it finds the fixed point the circuit is relaxing to).
        settle_tol: its force-residual tolerance.
        **deck_options: passed to `to_spice` (reltol, tmax, method, ...).
    """
    from analogeq.integrators import settle

    tstop_tau = _check_pos(tstop_tau, "tstop_tau")
    force = netlist.force(tau="node")
    res = run_ngspice(netlist, tstop_tau * force.tau, timeout=timeout, **deck_options)
    keep = np.concatenate(([True], np.diff(res.time) > 0))  # strictly increasing for odeint
    times = res.time[keep]
    spice = res.voltages(netlist.state_nodes)[keep]
    ref, ref_wall = reference_trajectory(netlist, times)
    t0 = time.perf_counter()
    fp = settle(force, torch.from_numpy(ref[-1:].copy()), settle_method, tol=settle_tol)
    settle_wall = time.perf_counter() - t0
    z_star = fp.z[0].numpy()
    return VerifyReport(
        name=netlist.name,
        counts=netlist.counts(),
        tau=force.tau,
        time=times,
        spice=spice,
        reference=ref,
        fixed_point=z_star,
        max_trajectory_diff=float(np.abs(spice - ref).max()),
        fixed_point_diff=float(np.abs(spice[-1] - z_star).max()),
        reference_gap=float(np.abs(ref[-1] - z_star).max()),
        settle_status=str(fp.status.value if hasattr(fp.status, "value") else fp.status),
        settle_residual=float(fp.residual.max()),
        ngspice_wall=res.wall_time,
        ngspice_analysis=res.analysis_time,
        reference_wall=ref_wall,
        settle_wall=settle_wall,
        deck_options=dict(deck_options),
    )
