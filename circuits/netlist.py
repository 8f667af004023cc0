"""Netlists: analog circuits as graphs that compile to a force and export to SPICE.

A `Netlist` is a networkx multigraph of nodes and devices.

Nodes (every node voltage is in volts, referenced to ground "0"):
* state nodes: a capacitor C (farads, > 0) to ground, a leak conductance G_leak (siemens, >= 0)
  to ground and an initial voltage v0. Their voltages are the state z of the force.
* input nodes: ideal voltage sources to ground (a DAC output, a bias rail).
* aux nodes: behavioural voltage nodes, V = expr(other node voltages): a neuron's amplifier
  (tanh), a normalisation or softmax stage, an ideal transimpedance output. They are algebraic
  (no capacitor): evaluated from the state in dependency order, must form no cycle.
* ground "0" (alias "gnd").

Devices (edges from the nodes that control them to the node they act on):
* conductance(a, b, g): a two-terminal resistor, current g (V_a - V_b) from a to b. Reciprocal.
* vccs(ctrl, out, gm): a linear voltage-controlled current source, current gm V(ctrl) into `out`
  (a state node). Directed. A crossbar device pair is two of them, +G_plus and -G_minus.
* current(out, expr): a behavioural current source, current expr(V) amperes into `out`
  (tanh, exp, products, quotients: anything `Expr` can write). Directed.
* the definition of every aux node (a behavioural voltage source, SPICE `B ... V=`).

Dynamics. For a state node i with capacitance C_i:

    C_i dV_i/dt = -G_leak,i V_i + sum over devices of the current they push into node i.

`Netlist.force(tau)` compiles this into a force of the integrators' protocol on z = the state
node voltages, shape (batch, n_state), volts, in time units of `tau` seconds:

    F(z) = tau dV/dt,   leak_i = tau G_ii / C_i,   nonlinear(z) = F(z) + leak * z,

where G_ii is the node's passive self-conductance: G_leak,i plus every conductance attached to it
(the diagonal of the nodal conductance matrix; = G_leak / C when the leak is the node's only
conductance). This is the leak/nonlinear split of docs/physics.md section 4 (the leak is linear, >=
0, and exact for IMEX/implicit methods). `tau="node"` (default) is the median node time constant
C_i / G_ii, so that a unit-gain circuit relaxes at rate ~1; `tau=1.0` gives dz/dt in volts per
second (the SPICE clock). The force evaluates every aux node and behavioural source vectorized:
expressions of identical structure (e.g. the 100 tanh amplifiers of a Hopfield net) in the same
dependency generation are evaluated as one batched expression.

Graph analysis: `reciprocity()` (a network whose coupling between state nodes is a symmetric
admittance matrix Y is reciprocal: J = -C^-1 Y is self-adjoint in the C inner product (symmetric
for equal capacitances), so it has real eigenvalues and the circuit is a gradient system of its
co-content; no limit cycle is possible), `strongly_connected_components()` of the signal-flow
graph, `counts()`.

Builders here: by hand (the `add_*` methods, or `Netlist.from_dict`), `from_linear` (an
`AnalogLinear` / `Crossbar` read as a column integrator, differential pairs G_plus - G_minus) and
`hopfield` / `random_hopfield` (a tanh network: C dx/dt = -G x + G (W tanh(x) + b)). Builders that
need the transformer model live in `analogeq.spice_models` (this layer knows no model).
"""

from __future__ import annotations

import math
import operator
import re
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch import Tensor

__all__ = [
    "Netlist",
    "NetlistForce",
    "Reciprocity",
    "Expr",
    "V",
    "Const",
    "tanh",
    "exp",
    "sqrt",
    "as_expr",
    "FUNCTIONS",
    "DEVICE_KINDS",
    "NODE_KINDS",
    "GROUND",
    "from_linear",
    "hopfield",
    "random_hopfield",
]

GROUND = "0"
NODE_KINDS = ("state", "input", "aux", "ground")
DEVICE_KINDS = ("conductance", "vccs", "current", "aux")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


# ------------------------------------------------------------------------------------------------
# expressions of node voltages (behavioural sources)

FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "exp": torch.exp,
    "sqrt": torch.sqrt,
}
"""Functions a behavioural source may use (each is also a SPICE B-source function)."""


def _fmt(x: float) -> str:
    """A float in SPICE syntax with full precision (shortest repr that round-trips)."""
    s = repr(float(x))
    return s if not s.startswith("-") else f"({s})"


class Expr:
    """An expression of node voltages: `V("x")`, constants, + - * /, tanh, exp, sqrt.

    Build with Python operators (`0.5 * V("h") * (1 + tanh(V("h")))`); `to_spice()` writes it in
    ngspice B-source syntax, `nodes()` lists the nodes it reads. Evaluated by `NetlistForce` on
    tensors (batched over samples and over expressions of the same `signature()`).
    """

    def __add__(self, other: Any) -> Expr:
        return Sum((self, as_expr(other)))

    def __radd__(self, other: Any) -> Expr:
        return Sum((as_expr(other), self))

    def __sub__(self, other: Any) -> Expr:
        return Sum((self, Prod(Const(-1.0), as_expr(other))))

    def __rsub__(self, other: Any) -> Expr:
        return Sum((as_expr(other), Prod(Const(-1.0), self)))

    def __mul__(self, other: Any) -> Expr:
        return Prod(self, as_expr(other))

    def __rmul__(self, other: Any) -> Expr:
        return Prod(as_expr(other), self)

    def __truediv__(self, other: Any) -> Expr:
        return Div(self, as_expr(other))

    def __rtruediv__(self, other: Any) -> Expr:
        return Div(as_expr(other), self)

    def __neg__(self) -> Expr:
        return Prod(Const(-1.0), self)

    # -- structure ----------------------------------------------------------------------------
    def children(self) -> tuple[Expr, ...]:
        return ()

    def nodes(self) -> set[str]:
        """Names of the nodes this expression reads."""
        out: set[str] = set()
        for leaf in self.walk():
            if isinstance(leaf, Var):
                out.add(leaf.name)
        return out

    def walk(self) -> Iterator[Expr]:
        """Pre-order traversal (the order of `signature` and of the leaves)."""
        yield self
        for c in self.children():
            yield from c.walk()

    def signature(self) -> tuple:
        """The expression's structure with node names and constants abstracted (hashable)."""
        raise NotImplementedError

    def to_spice(self) -> str:
        raise NotImplementedError

    def _eval(self, nodes: Iterator[Tensor], consts: Iterator[Tensor]) -> Tensor:
        """Evaluate the structure with leaves supplied in pre-order (vectorized templates)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Expr({self.to_spice()})"


class Var(Expr):
    """The voltage of node `name` (volts)."""

    def __init__(self, name: str):
        if not isinstance(name, str):
            raise TypeError(f"node name must be a str, got {type(name).__name__}")
        self.name = GROUND if name.lower() == "gnd" else name

    def signature(self) -> tuple:
        return ("V",)

    def to_spice(self) -> str:
        return f"V({self.name})"

    def _eval(self, nodes: Iterator[Tensor], consts: Iterator[Tensor]) -> Tensor:
        return next(nodes)


class Const(Expr):
    """A finite real constant."""

    def __init__(self, value: float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"constant must be a real number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"constant must be finite, got {value}")
        self.value = float(value)

    def signature(self) -> tuple:
        return ("C",)

    def to_spice(self) -> str:
        return _fmt(self.value)

    def _eval(self, nodes: Iterator[Tensor], consts: Iterator[Tensor]) -> Tensor:
        return next(consts)


class Sum(Expr):
    """An n-ary sum (kept flat so that long sums stay shallow)."""

    def __init__(self, terms: Iterable[Expr]):
        flat: list[Expr] = []
        for t in terms:
            if not isinstance(t, Expr):
                raise TypeError(f"sum terms must be Expr, got {type(t).__name__}")
            flat.extend(t.terms if isinstance(t, Sum) else (t,))
        if not flat:
            raise ValueError("a sum needs at least one term")
        self.terms = tuple(flat)

    def children(self) -> tuple[Expr, ...]:
        return self.terms

    def signature(self) -> tuple:
        return ("+",) + tuple(t.signature() for t in self.terms)

    def to_spice(self) -> str:
        return "(" + "+".join(t.to_spice() for t in self.terms) + ")"

    def _eval(self, nodes: Iterator[Tensor], consts: Iterator[Tensor]) -> Tensor:
        out = self.terms[0]._eval(nodes, consts)
        for t in self.terms[1:]:
            out = out + t._eval(nodes, consts)
        return out


class _Binary(Expr):
    """a <op> b; subclasses set the SPICE symbol and the torch operation."""

    symbol: str = ""

    def __init__(self, a: Expr, b: Expr):
        self.a, self.b = a, b

    def children(self) -> tuple[Expr, ...]:
        return (self.a, self.b)

    def signature(self) -> tuple:
        return (self.symbol, self.a.signature(), self.b.signature())

    def to_spice(self) -> str:
        return f"({self.a.to_spice()}{self.symbol}{self.b.to_spice()})"

    @staticmethod
    def _apply(a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def _eval(self, nodes: Iterator[Tensor], consts: Iterator[Tensor]) -> Tensor:
        a = self.a._eval(nodes, consts)  # a first: the iterators are consumed in tree order
        return self._apply(a, self.b._eval(nodes, consts))


class Prod(_Binary):
    symbol = "*"
    _apply = staticmethod(operator.mul)


class Div(_Binary):
    symbol = "/"
    _apply = staticmethod(operator.truediv)


class Func(Expr):
    """f(arg) for f in `FUNCTIONS`."""

    def __init__(self, name: str, arg: Expr):
        if name not in FUNCTIONS:
            raise ValueError(
                f"unknown function {name!r} in a behavioural source; allowed: {sorted(FUNCTIONS)}"
            )
        self.name, self.arg = name, as_expr(arg)

    def children(self) -> tuple[Expr, ...]:
        return (self.arg,)

    def signature(self) -> tuple:
        return (self.name, self.arg.signature())

    def to_spice(self) -> str:
        return f"{self.name}({self.arg.to_spice()})"

    def _eval(self, nodes: Iterator[Tensor], consts: Iterator[Tensor]) -> Tensor:
        return FUNCTIONS[self.name](self.arg._eval(nodes, consts))


def as_expr(x: Any) -> Expr:
    """An `Expr` from an Expr, a real number (a constant) or a node name given as V(...)."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Const(x)
    raise TypeError(f"expected an Expr or a real number, got {type(x).__name__} {x!r}")


def V(name: str) -> Var:
    """The voltage of node `name`, for building behavioural expressions."""
    return Var(name)


def tanh(x: Any) -> Expr:
    return Func("tanh", as_expr(x))


def exp(x: Any) -> Expr:
    return Func("exp", as_expr(x))


def sqrt(x: Any) -> Expr:
    return Func("sqrt", as_expr(x))


# ------------------------------------------------------------------------------------------------
# validation helpers


def _check_real(value: Any, name: str, *, low: float | None = None, strict: bool = False,
                unit: str = "") -> float:
    rng = "" if low is None else (f" > {low:g}" if strict else f" >= {low:g}")
    u = f" {unit}" if unit else ""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite real number{rng}{u}, got {type(value).__name__}")
    v = float(value)
    bad = not math.isfinite(v) or (low is not None and (v <= low if strict else v < low))
    if bad:
        raise ValueError(f"{name} must be a finite real number{rng}{u}, got {value}")
    return v


# ------------------------------------------------------------------------------------------------
# analysis results


@dataclass
class Reciprocity:
    """Outcome of `Netlist.reciprocity()`.

    reciprocal: the coupling between state nodes is a symmetric admittance matrix (passive
        conductances, or VCCS pairs with gm_ij = gm_ji between state nodes) and nothing couples
        them through state-dependent aux nodes or behavioural sources. Then J = -C^-1 Y has real
        eigenvalues: the circuit relaxes without oscillating and cannot have a limit cycle.
        Sufficient, not necessary: e.g. a Hopfield net with symmetric W has an energy function
        but couples through tanh amplifiers, which this structural test does not credit.
    nonreciprocal: names of the devices that break reciprocity (directed couplings).
    asymmetry: ||Y - Y^T||_F / ||Y||_F of the linear state-state admittance (0 = symmetric).
    reason: one sentence.
    """

    reciprocal: bool
    nonreciprocal: list[str] = field(default_factory=list)
    asymmetry: float = 0.0
    reason: str = ""

    def __bool__(self) -> bool:
        return self.reciprocal


# ------------------------------------------------------------------------------------------------
# the netlist


class Netlist:
    """A circuit as a networkx graph (module docstring). Build with the `add_*` methods.

    Attributes:
        name: a title (the SPICE deck's first line).
        graph: `networkx.MultiDiGraph`; node attributes `kind` ("state" | "input" | "aux" |
            "ground") and `capacitance` (F), `leak` (S), `v0` (V) for state nodes, `voltage` (V)
            for inputs, `expr` for aux nodes; one edge per (control node, acted-on node) of each
            device, keyed by the device name, with attribute `kind`. A conductance has edges both
            ways.
        devices: dict name -> device record (kind and its parameters), in insertion order.

    Names: nodes match [A-Za-z_][A-Za-z0-9_]* and are unique ignoring case (SPICE is case
    insensitive); "0" (alias "gnd") is ground. Device names match [A-Za-z0-9][A-Za-z0-9_]*
    (automatic names when omitted). Bad values raise ValueError/TypeError naming the argument.
    """

    def __init__(self, name: str = "analogeq circuit"):
        if not isinstance(name, str) or "\n" in name:
            raise TypeError("name must be a one-line str")
        self.name = name
        self.graph = nx.MultiDiGraph()
        self.graph.add_node(GROUND, kind="ground")
        self.devices: dict[str, dict[str, Any]] = {}
        self._lower: dict[str, str] = {GROUND: GROUND}
        self._dev_lower: set[str] = set()
        self._auto = 0

    # -- nodes --------------------------------------------------------------------------------
    def _new_node(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"node name must be a str, got {type(name).__name__}")
        if name.lower() in ("0", "gnd"):
            raise ValueError(f"node name {name!r} is reserved for ground")
        if not _NAME.match(name):
            raise ValueError(
                f"node name {name!r} is not a valid SPICE node name: use letters, digits and _, "
                "starting with a letter or _"
            )
        if name.lower() in self._lower:
            raise ValueError(
                f"node {name!r} already exists (as {self._lower[name.lower()]!r}; names are "
                "compared ignoring case, as in SPICE)"
            )
        self._lower[name.lower()] = name

    def add_state(self, name: str, capacitance: float, leak: float = 0.0, v0: float = 0.0) -> str:
        """A state node: capacitor `capacitance` (F, > 0) and leak conductance `leak` (S, >= 0)
        to ground, initial voltage `v0` (V). Returns the name."""
        c = _check_real(capacitance, f"capacitance of node {name!r}", low=0.0, strict=True,
                        unit="farads")
        g = _check_real(leak, f"leak of node {name!r}", low=0.0, unit="siemens")
        v = _check_real(v0, f"v0 of node {name!r}", unit="volts")
        self._new_node(name)
        self.graph.add_node(name, kind="state", capacitance=c, leak=g, v0=v)
        return name

    def add_input(self, name: str, voltage: float) -> str:
        """An input node: an ideal voltage source `voltage` (V) to ground. Returns the name."""
        v = _check_real(voltage, f"voltage of input {name!r}", unit="volts")
        self._new_node(name)
        self.graph.add_node(name, kind="input", voltage=v)
        return name

    def add_aux(self, name: str, expr: Expr | float) -> str:
        """A behavioural voltage node V(name) = expr (of nodes already in the netlist)."""
        e = as_expr(expr)
        self._check_refs(e.nodes(), f"aux node {name!r}")
        self._new_node(name)
        self.graph.add_node(name, kind="aux", expr=e)
        self._add_device("aux", name, {"node": name, "expr": e},
                         [(n, name) for n in sorted(e.nodes())])
        return name

    # -- devices ------------------------------------------------------------------------------
    def _resolve(self, node: str, what: str) -> str:
        if not isinstance(node, str):
            raise TypeError(f"{what} must be a node name (str), got {type(node).__name__}")
        if node.lower() == "gnd":
            node = GROUND
        if node not in self.graph:
            raise ValueError(
                f"{what}: unknown node {node!r} (add it first with add_state / add_input / "
                "add_aux)"
            )
        return node

    def _check_refs(self, nodes: Iterable[str], what: str) -> None:
        for n in nodes:
            self._resolve(n, what)

    def _device_name(self, name: str | None, prefix: str) -> str:
        if name is None:
            while True:
                self._auto += 1
                name = f"{prefix}{self._auto}"
                if name.lower() not in self._dev_lower:
                    break
        if not isinstance(name, str) or not _DEVICE_NAME.match(name):
            raise ValueError(
                f"device name {name!r} must match [A-Za-z0-9][A-Za-z0-9_]* (it becomes part of "
                "a SPICE element name)"
            )
        if name.lower() in self._dev_lower:
            raise ValueError(f"device {name!r} already exists (names are compared ignoring case)")
        return name

    def _add_device(self, kind: str, name: str, record: dict[str, Any],
                    edges: list[tuple[str, str]]) -> None:
        self._dev_lower.add(name.lower())
        self.devices[name] = {"kind": kind, **record}
        for u, v in edges:
            self.graph.add_edge(u, v, key=name, kind=kind)

    def _require_state(self, node: str, what: str) -> None:
        if self.graph.nodes[node]["kind"] != "state":
            raise ValueError(
                f"{what} must be a state node (current into a voltage-defined node or ground has "
                f"no effect), got {node!r} of kind {self.graph.nodes[node]['kind']!r}"
            )

    def add_conductance(self, a: str, b: str, g: float, name: str | None = None) -> str:
        """A resistor of conductance `g` (S, > 0) between nodes a and b. Returns its name."""
        a = self._resolve(a, "conductance terminal a")
        b = self._resolve(b, "conductance terminal b")
        if a == b:
            raise ValueError(f"conductance between {a!r} and itself: the terminals must differ")
        gv = _check_real(g, "g (conductance)", low=0.0, strict=True, unit="siemens")
        name = self._device_name(name, "g")
        self._add_device("conductance", name, {"a": a, "b": b, "g": gv}, [(a, b), (b, a)])
        return name

    def add_vccs(self, ctrl: str, out: str, gm: float, name: str | None = None) -> str:
        """A linear VCCS: current gm V(ctrl) (gm in S, any finite sign) into state node `out`."""
        ctrl = self._resolve(ctrl, "vccs ctrl")
        out = self._resolve(out, "vccs out")
        self._require_state(out, "vccs out")
        if ctrl == GROUND:
            raise ValueError("vccs ctrl is ground: it would carry no current")
        gv = _check_real(gm, "gm (transconductance)", unit="siemens")
        name = self._device_name(name, "m")
        self._add_device("vccs", name, {"ctrl": ctrl, "out": out, "gm": gv}, [(ctrl, out)])
        return name

    def add_current(self, out: str, expr: Expr | float, name: str | None = None) -> str:
        """A behavioural current source: current expr(V) (A) into state node `out`."""
        out = self._resolve(out, "current source out")
        self._require_state(out, "current source out")
        e = as_expr(expr)
        self._check_refs(e.nodes(), f"current source into {out!r}")
        name = self._device_name(name, "b")
        srcs = sorted(e.nodes()) or [GROUND]
        self._add_device("current", name, {"out": out, "expr": e}, [(s, out) for s in srcs])
        return name

    def add_device(self, kind: str, *args: Any, **kwargs: Any) -> str:
        """Dispatch by kind: "conductance", "vccs", "current" (devices) or "state", "input",
        "aux" (nodes). An unknown kind is a ValueError listing the allowed ones."""
        methods = {
            "conductance": self.add_conductance,
            "vccs": self.add_vccs,
            "current": self.add_current,
            "state": self.add_state,
            "input": self.add_input,
            "aux": self.add_aux,
        }
        if kind not in methods:
            raise ValueError(f"unknown element kind {kind!r}; allowed: {sorted(methods)}")
        return methods[kind](*args, **kwargs)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Netlist:
        """Build from plain data: {"name": ..., "elements": [{"type": kind, **arguments}, ...]}
        (kinds as in `add_device`; expressions as `Expr` objects or numbers)."""
        if not isinstance(spec, dict) or not isinstance(spec.get("elements"), list):
            raise TypeError("spec must be a dict with a list under 'elements'")
        net = cls(spec.get("name", "analogeq circuit"))
        for i, el in enumerate(spec["elements"]):
            if not isinstance(el, dict) or "type" not in el:
                raise ValueError(f"elements[{i}] must be a dict with a 'type' key, got {el!r}")
            args = {k: v for k, v in el.items() if k != "type"}
            net.add_device(el["type"], **args)
        return net

    # -- views --------------------------------------------------------------------------------
    def nodes_of(self, kind: str) -> list[str]:
        """Node names of one kind, in insertion order."""
        if kind not in NODE_KINDS:
            raise ValueError(f"kind must be one of {NODE_KINDS}, got {kind!r}")
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] == kind]

    @property
    def state_nodes(self) -> list[str]:
        return self.nodes_of("state")

    @property
    def input_nodes(self) -> list[str]:
        return self.nodes_of("input")

    @property
    def aux_nodes(self) -> list[str]:
        return self.nodes_of("aux")

    def node(self, name: str) -> dict[str, Any]:
        """The attribute dict of node `name`."""
        return self.graph.nodes[self._resolve(name, "node")]

    def initial_state(self, batch: int = 1, *, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> Tensor:
        """The state nodes' v0, shape (batch, n_state), volts."""
        v0 = torch.tensor([self.graph.nodes[n]["v0"] for n in self.state_nodes], dtype=dtype,
                          device=device)
        return v0.expand(batch, -1).clone()

    def input_voltages(self, *, dtype: torch.dtype = torch.float64,
                       device: torch.device | str | None = None) -> Tensor:
        """The input nodes' voltages, shape (n_input,), volts."""
        return torch.tensor([self.graph.nodes[n]["voltage"] for n in self.input_nodes],
                            dtype=dtype, device=device)

    def set_initial(self, v0: Sequence[float] | Tensor) -> None:
        """Set every state node's v0 (one value per state node, in `state_nodes` order)."""
        vals = v0.detach().reshape(-1).tolist() if isinstance(v0, Tensor) else list(v0)
        states = self.state_nodes
        if len(vals) != len(states):
            raise ValueError(f"v0 must have {len(states)} entries (one per state), got {len(vals)}")
        for n, v in zip(states, vals, strict=True):
            self.graph.nodes[n]["v0"] = _check_real(v, f"v0 of node {n!r}", unit="volts")

    def time_constants(self) -> list[float]:
        """C_i / G_ii per state node, seconds (inf for a node without any conductance)."""
        gdiag = self._self_conductance()
        return [self.graph.nodes[n]["capacitance"] / g if g > 0 else math.inf
                for n, g in zip(self.state_nodes, gdiag, strict=True)]

    def _self_conductance(self) -> list[float]:
        idx = {n: i for i, n in enumerate(self.state_nodes)}
        g = [self.graph.nodes[n]["leak"] for n in idx]
        for d in self.devices.values():
            if d["kind"] == "conductance":
                for t in (d["a"], d["b"]):
                    if t in idx:
                        g[idx[t]] += d["g"]
        return g

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError for a netlist that cannot be simulated: no state node, a dangling
        node (connected to nothing), a floating state node (no conductive path to ground or to a
        voltage-defined node: no DC solution, SPICE's "singular matrix"), or an aux cycle."""
        states = self.state_nodes
        if not states:
            raise ValueError("the netlist has no state node (add one with add_state)")
        for n, d in self.graph.nodes(data=True):
            if n == GROUND:
                continue
            touched = self.graph.degree(n) > 0
            if d["kind"] == "state" and not touched and d["leak"] == 0:
                raise ValueError(
                    f"dangling node {n!r}: a state node connected to no device and without leak"
                )
            if d["kind"] == "input" and self.graph.out_degree(n) == 0:
                raise ValueError(f"dangling node {n!r}: an input that no device reads")
        # floating: conductive components without a fixed potential
        cg = nx.Graph()
        cg.add_nodes_from(states)
        for d in self.devices.values():
            if d["kind"] == "conductance":
                cg.add_edge(d["a"], d["b"])
        for comp in nx.connected_components(cg):
            anchored = any(
                self.graph.nodes[n]["kind"] != "state" or self.graph.nodes[n]["leak"] > 0
                for n in comp
            )
            if not anchored:
                floating = sorted(n for n in comp if self.graph.nodes[n]["kind"] == "state")
                raise ValueError(
                    f"floating node(s) {floating}: no conductive path to ground or to a "
                    "voltage-defined node (give a leak or a conductance); the circuit has no DC "
                    "solution"
                )
        aux = self.aux_nodes
        if aux:
            g = nx.DiGraph()
            g.add_nodes_from(aux)
            aux_set = set(aux)
            for n in aux:
                g.add_edges_from((m, n) for m in self.graph.nodes[n]["expr"].nodes()
                                 if m in aux_set)
            if not nx.is_directed_acyclic_graph(g):
                raise ValueError(
                    f"aux nodes form a cycle {nx.find_cycle(g)}: an algebraic loop (no capacitor "
                    "on it), which neither the force nor SPICE's transient can resolve"
                )

    # -- analysis -----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Node and device counts: nodes by kind ("state", "input", "aux", total "nodes"; ground
        excluded), devices by kind ("conductance", "vccs", "current", "aux_sources" = the
        behavioural voltage sources of the aux nodes), "capacitors", "leaks" (resistors to
        ground), and "devices" = all SPICE elements (input voltage sources included)."""
        out: dict[str, int] = {k: len(self.nodes_of(k)) for k in ("state", "input", "aux")}
        out["nodes"] = out["state"] + out["input"] + out["aux"]
        keys = {"conductance": "conductance", "vccs": "vccs", "current": "current",
                "aux": "aux_sources"}
        for k, key in keys.items():
            out[key] = sum(1 for d in self.devices.values() if d["kind"] == k)
        out["capacitors"] = out["state"]
        out["leaks"] = sum(1 for n in self.state_nodes if self.graph.nodes[n]["leak"] > 0)
        out["devices"] = (sum(out[k] for k in keys.values()) + out["capacitors"] + out["leaks"]
                          + out["input"])
        return out

    def signal_graph(self) -> nx.DiGraph:
        """Who drives whom, over every node but ground: state and aux nodes, inputs (sources
        only). A conductance between two state nodes drives both ways; towards a voltage-defined
        node (input, aux) it only drives the state node; VCCS and behavioural sources drive
        their `out` from their controls; an aux node is driven by the nodes it reads."""
        g = nx.DiGraph()
        g.add_nodes_from(n for n in self.graph if n != GROUND)
        kinds = dict(self.graph.nodes(data="kind"))
        for u, v, kind in self.graph.edges(data="kind"):
            if GROUND in (u, v):
                continue
            if kind == "conductance" and kinds[v] != "state":
                continue  # a voltage-defined node is not driven by the current it delivers
            g.add_edge(u, v)
        return g

    def strongly_connected_components(self) -> list[set[str]]:
        """Strongly connected components of `signal_graph()` (feedback loops), largest first.
        A feed-forward circuit has only singletons; a recurrent net one big component."""
        comps = list(nx.strongly_connected_components(self.signal_graph()))
        return sorted(comps, key=lambda c: (-len(c), sorted(c)))

    def _state_dependent(self) -> set[str]:
        """State nodes and every aux node that (transitively) reads one."""
        dep = set(self.state_nodes)
        for n in self._aux_order():
            if self.graph.nodes[n]["expr"].nodes() & dep:
                dep.add(n)
        return dep

    def admittance(self) -> Tensor:
        """The linear state-state nodal admittance Y (n_state, n_state), siemens, float64:
        current into node i from the linear devices = -sum_j Y_ij V_j + (drive from other nodes).
        """
        states = self.state_nodes
        idx = {n: i for i, n in enumerate(states)}
        y = torch.zeros(len(states), len(states), dtype=torch.float64)
        for i, g in enumerate(self._self_conductance()):
            y[i, i] += g
        for d in self.devices.values():
            if d["kind"] == "conductance" and d["a"] in idx and d["b"] in idx:
                i, j = idx[d["a"]], idx[d["b"]]
                y[i, j] -= d["g"]
                y[j, i] -= d["g"]
            elif d["kind"] == "vccs" and d["ctrl"] in idx:
                y[idx[d["out"]], idx[d["ctrl"]]] -= d["gm"]
        return y

    def reciprocity(self, rtol: float = 1e-9) -> Reciprocity:
        """Structural reciprocity test (see `Reciprocity`); `rtol` for the symmetry of Y."""
        dep = self._state_dependent()
        broken: list[str] = []
        for name, d in self.devices.items():
            kind = d["kind"]
            if kind == "current" and d["expr"].nodes() & dep:
                broken.append(name)
            elif kind == "vccs" and d["ctrl"] in dep and d["ctrl"] not in self.state_nodes:
                broken.append(name)
            elif kind == "conductance":
                for t, o in ((d["a"], d["b"]), (d["b"], d["a"])):
                    if (t in dep and self.graph.nodes[t]["kind"] == "aux"
                            and self.graph.nodes[o]["kind"] == "state"):
                        broken.append(name)
                        break
        y = self.admittance()
        norm = float(torch.linalg.matrix_norm(y))
        asym = float(torch.linalg.matrix_norm(y - y.T)) / norm if norm > 0 else 0.0
        if asym > rtol:
            idx = {n: i for i, n in enumerate(self.state_nodes)}
            for name, d in self.devices.items():
                if d["kind"] == "vccs" and d["ctrl"] in idx:
                    i, j = idx[d["out"]], idx[d["ctrl"]]
                    if i != j and not math.isclose(float(y[i, j]), float(y[j, i]),
                                                   rel_tol=rtol, abs_tol=rtol * norm):
                        broken.append(name)
        if not broken:
            reason = ("symmetric linear coupling between state nodes: real eigenvalues, no "
                      "limit cycles")
        else:
            reason = (f"{len(broken)} directed coupling(s) (e.g. {broken[0]!r}): the Jacobian "
                      "need not be symmetric; limit cycles are not excluded")
        return Reciprocity(not broken, broken, asym, reason)

    @property
    def is_reciprocal(self) -> bool:
        return self.reciprocity().reciprocal

    def _aux_graph(self) -> tuple[list[str], nx.DiGraph]:
        """The aux nodes and their dependency graph (edge m -> n: n's expression reads m)."""
        aux = self.aux_nodes
        g = nx.DiGraph()
        g.add_nodes_from(aux)
        aux_set = set(aux)
        for n in aux:
            for m in self.graph.nodes[n]["expr"].nodes():
                if m in aux_set:
                    g.add_edge(m, n)
        return aux, g

    def _aux_order(self) -> list[str]:
        aux, g = self._aux_graph()
        return list(nx.lexicographical_topological_sort(g, key=aux.index))

    def _aux_generations(self) -> list[list[str]]:
        aux, g = self._aux_graph()
        order = {n: i for i, n in enumerate(aux)}
        return [sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(g)]

    # -- compile ------------------------------------------------------------------------------
    def force(self, tau: float | str = "node", inputs: Tensor | None = None) -> NetlistForce:
        """Compile to a force on the state node voltages (module docstring).

        Args:
            tau: time unit in seconds (> 0), or "node": the median node time constant
                C_i / G_ii. F = tau dV/dt (volts per tau); tau=1.0 gives volts per second.
            inputs: input voltages (batch, n_input) or (n_input,), volts; None = the netlist's
                own. With a batch of inputs the force's batch is fixed to it (and `select` works).

        Shapes: z (batch, n_state) in `state_nodes` order; dtype and device follow z.
        """
        self.validate()
        if isinstance(tau, str):
            if tau != "node":
                raise ValueError(f"tau must be a positive number of seconds or 'node', got {tau!r}")
            tau_s = statistics.median(self.time_constants())
        else:
            tau_s = _check_real(tau, "tau", low=0.0, strict=True, unit="seconds")
        return NetlistForce(self, tau_s, inputs)

    def __repr__(self) -> str:
        c = self.counts()
        return (f"Netlist({self.name!r}: {c['state']} state, {c['input']} input, {c['aux']} aux "
                f"nodes; {c['devices']} devices)")


# ------------------------------------------------------------------------------------------------
# the compiled force


class _Group:
    """Expressions of one signature evaluated together: a template, gathered node columns (one
    per V leaf: (k,) indices into the value table) and constants (one (k,) per Const leaf)."""

    def __init__(self, exprs: list[Expr], targets: list[int], index: dict[str, int]):
        self.template = exprs[0]
        leaves = [[e for e in x.walk() if isinstance(e, Var | Const)] for x in exprs]
        n_leaves = len(leaves[0])
        self.node_cols: list[list[int]] = []
        self.const_cols: list[list[float]] = []
        for p in range(n_leaves):
            col = [lv[p] for lv in leaves]
            if isinstance(col[0], Var):
                self.node_cols.append([index[v.name] for v in col])  # type: ignore[union-attr]
            else:
                self.const_cols.append([c.value for c in col])  # type: ignore[union-attr]
        self.targets = targets
        self._cache: dict[tuple, tuple[list[Tensor], list[Tensor], Tensor]] = {}

    def tensors(self, dtype: torch.dtype, device: torch.device):
        key = (dtype, device)
        if key not in self._cache:
            nodes = [torch.tensor(c, device=device) for c in self.node_cols]
            consts = [torch.tensor(c, dtype=dtype, device=device) for c in self.const_cols]
            self._cache[key] = (nodes, consts, torch.tensor(self.targets, device=device))
        return self._cache[key]

    def evaluate(self, vals: Tensor) -> tuple[Tensor, Tensor]:
        """(targets (k,), values (batch, k)) for the value table vals (batch, n_all)."""
        nodes, consts, targets = self.tensors(vals.dtype, vals.device)
        out = self.template._eval(iter([vals[:, i] for i in nodes]), iter(consts))
        return targets, out.expand(vals.shape[0], len(self.targets))


def _groups(items: list[tuple[Expr, int]], index: dict[str, int]) -> list[_Group]:
    by_sig: dict[tuple, list[tuple[Expr, int]]] = {}
    for e, t in items:
        by_sig.setdefault(e.signature(), []).append((e, t))
    return [_Group([e for e, _ in v], [t for _, t in v], index) for v in by_sig.values()]


class NetlistForce:
    """A netlist compiled to a force F(z) = -leak * z + nonlinear(z) (see `Netlist.force`).

    Attributes:
        tau: the time unit, seconds (F = tau dV/dt).
        leak: (n_state,) tensor, tau G_ii / C_i per node (>= 0), in the dtype of the last call
            (float64 until called); broadcastable to z.
        state_nodes, input_nodes, aux_nodes: names, in the column order of z / inputs / `aux`.
        shape: (batch, n_state) or None when the batch is free (inputs not batched).

    Methods: `__call__(z)`, `nonlinear(z)`, `aux(z)` (aux node voltages (batch, n_aux)),
    `currents(z)` (device currents into each state node, amperes), `select(index)`.
    """

    def __init__(self, netlist: Netlist, tau: float, inputs: Tensor | None = None):
        self.netlist = netlist
        self.tau = tau
        self.state_nodes = netlist.state_nodes
        self.input_nodes = netlist.input_nodes
        self.aux_nodes = netlist.aux_nodes
        ns, ni = len(self.state_nodes), len(self.input_nodes)
        # value table columns: ground, inputs, states, aux
        names = [GROUND] + self.input_nodes + self.state_nodes + self.aux_nodes
        self._index = {n: i for i, n in enumerate(names)}
        self._n_all = len(names)
        self._s0 = 1 + ni
        cap = [netlist.graph.nodes[n]["capacitance"] for n in self.state_nodes]
        gdiag = netlist._self_conductance()
        m = torch.zeros(ns, self._n_all, dtype=torch.float64)  # linear currents, diag removed
        for d in netlist.devices.values():
            if d["kind"] == "conductance":
                for t, o in ((d["a"], d["b"]), (d["b"], d["a"])):
                    if t in self._index and self._s0 <= self._index[t] < self._s0 + ns:
                        m[self._index[t] - self._s0, self._index[o]] += d["g"]
            elif d["kind"] == "vccs":
                m[self._index[d["out"]] - self._s0, self._index[d["ctrl"]]] += d["gm"]
        m[:, 0] = 0.0  # ground is 0 V
        self._cap = torch.tensor(cap, dtype=torch.float64)
        self._m = m
        self._leak64 = tau * torch.tensor(gdiag, dtype=torch.float64) / self._cap
        self.leak: Tensor = self._leak64
        self._aux_groups = [
            _groups([(netlist.graph.nodes[n]["expr"], self._index[n]) for n in gen], self._index)
            for gen in netlist._aux_generations()
        ]
        cur = [(d["expr"], self._index[d["out"]] - self._s0) for d in netlist.devices.values()
               if d["kind"] == "current"]
        self._cur_groups = _groups(cur, self._index)
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        if inputs is None:
            self._inputs = netlist.input_voltages().reshape(1, ni)
            self.shape: tuple[int, int] | None = None
        else:
            if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
                raise TypeError("inputs must be a real floating tensor (batch, n_input) volts")
            x = inputs.reshape(1, -1) if inputs.ndim == 1 else inputs
            if x.ndim != 2 or x.shape[1] != ni:
                raise ValueError(
                    f"inputs must have shape (batch, {ni}) or ({ni},), got {tuple(inputs.shape)}"
                )
            if not bool(torch.isfinite(x).all()):
                raise ValueError("inputs must be finite (no NaN/inf)")
            self._inputs = x
            self.shape = (x.shape[0], ns) if inputs.ndim == 2 else None

    # -- tensors per dtype/device -----------------------------------------------------------
    def _tensors(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (z.dtype, z.device)
        if key not in self._cache:
            scale = (self.tau / self._cap)
            self._cache[key] = (
                (self._m * scale[:, None]).to(dtype=z.dtype, device=z.device),
                scale.to(dtype=z.dtype, device=z.device),
                self._leak64.to(dtype=z.dtype, device=z.device),
            )
        m, scale, leak = self._cache[key]
        self.leak = leak
        return m, scale, leak

    def _check(self, z: Tensor) -> None:
        ns = len(self.state_nodes)
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor (batch, {ns}), got {type(z).__name__}")
        if z.ndim != 2 or z.shape[1] != ns:
            raise ValueError(f"z must have shape (batch, {ns}) volts, got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise TypeError(f"z must be a real floating tensor, got {z.dtype}")
        if self.shape is not None and z.shape[0] != self.shape[0]:
            raise ValueError(
                f"z has batch {z.shape[0]}, but the force is bound to {self.shape[0]} input rows"
            )

    def _table(self, z: Tensor) -> Tensor:
        """The value table (batch, n_all): ground, inputs, states, aux voltages."""
        b = z.shape[0]
        x = self._inputs.to(dtype=z.dtype, device=z.device).expand(b, -1)
        zeros = z.new_zeros(b, 1 + len(self.aux_nodes))
        vals = torch.cat((zeros[:, :1], x, z, zeros[:, 1:]), dim=1)
        for gen in self._aux_groups:
            for g in gen:
                targets, values = g.evaluate(vals)
                vals = vals.index_copy(1, targets, values.to(vals.dtype))
        return vals

    def aux(self, z: Tensor) -> Tensor:
        """The aux node voltages (batch, n_aux), volts, in `aux_nodes` order."""
        self._check(z)
        return self._table(z)[:, self._s0 + len(self.state_nodes):]

    def currents(self, z: Tensor) -> Tensor:
        """Net current into each state node from every device except its passive self-
        conductance (batch, n_state), amperes: nonlinear(z) = tau / C * currents(z)."""
        self._check(z)
        m, scale, _ = self._tensors(z)
        return self._currents(z, m / scale[:, None])

    def _currents(self, z: Tensor, m: Tensor) -> Tensor:
        vals = self._table(z)
        out = vals @ m.T
        for g in self._cur_groups:
            targets, values = g.evaluate(vals)
            out = out.index_add(1, targets, values)
        return out

    def nonlinear(self, z: Tensor) -> Tensor:
        """N(z) = F(z) + leak * z, shape like z (volts per tau)."""
        self._check(z)
        m, scale, _ = self._tensors(z)
        vals = self._table(z)
        out = vals @ m.T
        for g in self._cur_groups:
            targets, values = g.evaluate(vals)
            out = out.index_add(1, targets, values * scale[targets])
        return out

    def __call__(self, z: Tensor) -> Tensor:
        n = self.nonlinear(z)
        return n - self.leak * z

    def select(self, index: Tensor) -> NetlistForce:
        """The force on the samples `index` (only differs from self with batched inputs)."""
        if self.shape is None:
            return self
        view = NetlistForce.__new__(NetlistForce)
        view.__dict__.update(self.__dict__)
        view._inputs = self._inputs.index_select(0, index.to(self._inputs.device))
        view.shape = (int(index.numel()), len(self.state_nodes))
        return view

    def __repr__(self) -> str:
        return (f"NetlistForce({self.netlist.name!r}, n_state={len(self.state_nodes)}, "
                f"tau={self.tau:g} s)")


# ------------------------------------------------------------------------------------------------
# builders


def _as_matrix(w: Any, name: str, shape: tuple[int, ...] | None = None) -> Tensor:
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point() or not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must be a finite real floating tensor")
    if shape is not None and tuple(w.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(w.shape)}")
    return w.detach().to(torch.float64).cpu()


def from_linear(layer: Any, x: Tensor | Sequence[float], *, tau: float = 1e-7,
                name: str = "crossbar") -> Netlist:
    """A crossbar read as a netlist: rows driven by input voltages, one integrating column node
    per output, every device pair a VCCS pair +G_plus / -G_minus.

    Column i is a state node with capacitance tau g_ref and leak g_ref (so tau is its time
    constant) summing the currents sum_j (G_plus - G_minus)_ij x_j; it settles to
    y_i = sum_j W_ij x_j (+ bias b_i, driven from a 1 V rail "one" through gm = g_ref b_i), with
    W = (G_plus - G_minus) / g_ref the noise-free effective weight without IR drop.

    Args:
        layer: an `AnalogLinear` or `Crossbar` (anything with `conductances()`, `g_ref`,
            `in_features`, `out_features`, optional `bias`).
        x: the inputs (in_features,), volts (row voltages after the DAC).
        tau: column time constant, seconds (> 0).
    Nodes: inputs "x<j>", states "y<i>". Devices: "p<i>_<j>" (+G_plus), "n<i>_<j>" (-G_minus).
    """
    for attr in ("conductances", "g_ref", "in_features", "out_features"):
        if not hasattr(layer, attr):
            raise TypeError(f"layer must be an AnalogLinear or Crossbar (no {attr!r})")
    tau = _check_real(tau, "tau", low=0.0, strict=True, unit="seconds")
    gp, gm = layer.conductances(noisy=False)
    gp, gm = _as_matrix(gp, "G_plus"), _as_matrix(gm, "G_minus")
    g_ref = float(layer.g_ref)
    xs = _as_matrix(torch.as_tensor(x, dtype=torch.float64), "x", (layer.in_features,))
    net = Netlist(name)
    for j in range(layer.in_features):
        net.add_input(f"x{j}", float(xs[j]))
    bias = getattr(layer, "bias", None)
    if bias is not None:
        bias = bias.detach()
        net.add_input("one", 1.0)
    for i in range(layer.out_features):
        net.add_state(f"y{i}", capacitance=tau * g_ref, leak=g_ref)
    for i in range(layer.out_features):
        for j in range(layer.in_features):
            if gp[i, j] != 0:
                net.add_vccs(f"x{j}", f"y{i}", float(gp[i, j]), name=f"p{i}_{j}")
            if gm[i, j] != 0:
                net.add_vccs(f"x{j}", f"y{i}", -float(gm[i, j]), name=f"n{i}_{j}")
        if bias is not None and float(bias[i]) != 0:
            net.add_vccs("one", f"y{i}", g_ref * float(bias[i]), name=f"b{i}")
    return net


def hopfield(weight: Tensor, bias: Tensor | None = None, *, v0: Tensor | None = None,
             capacitance: float = 1e-12, conductance: float = 1e-5, gain: float = 1.0,
             differential: bool = True, name: str = "hopfield") -> Netlist:
    """A continuous Hopfield / tanh network on a recurrent crossbar:

        C dx_i/dt = -G x_i + G (sum_j W_ij tanh(gain x_j) + b_i),

    i.e. in units of tau = C / G: dx/dt = -x + W tanh(gain x) + b. Node i ("x<i>") has
    capacitance C and leak G; its amplifier "a<i>" (an aux node) outputs tanh(gain V(x<i>)) and
    drives row i of the crossbar, whose column currents charge the node capacitors: each weight
    is a VCCS from a<j> into x<i>, as a differential pair (+G relu(W_ij), -G relu(-W_ij)) or as
    one VCCS of gm = G W_ij. The bias comes from a 1 V rail "one" through gm = G b_i.

    Args:
        weight: (n, n) real; bias: (n,) or None; v0: (n,) initial node voltages or None (0 V).
        capacitance (F, > 0), conductance (S, > 0): node C and G; tau = C / G (default 100 ns).
        gain: amplifier gain inside tanh (finite).
    With ||W||_2 * gain < 1 the fixed point is unique and globally attracting.
    """
    w = _as_matrix(weight, "weight")
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"weight must be square (n, n), got {tuple(w.shape)}")
    n = w.shape[0]
    b = None if bias is None else _as_matrix(bias, "bias", (n,))
    x0 = torch.zeros(n, dtype=torch.float64) if v0 is None else _as_matrix(v0, "v0", (n,))
    cap = _check_real(capacitance, "capacitance", low=0.0, strict=True, unit="farads")
    g = _check_real(conductance, "conductance", low=0.0, strict=True, unit="siemens")
    k = _check_real(gain, "gain")
    net = Netlist(name)
    if b is not None:
        net.add_input("one", 1.0)
    for i in range(n):
        net.add_state(f"x{i}", capacitance=cap, leak=g, v0=float(x0[i]))
    for i in range(n):
        arg: Expr = V(f"x{i}") if k == 1.0 else k * V(f"x{i}")
        net.add_aux(f"a{i}", tanh(arg))
    for i in range(n):
        for j in range(n):
            wij = float(w[i, j])
            if wij == 0:
                continue
            if differential:
                if wij > 0:
                    net.add_vccs(f"a{j}", f"x{i}", g * wij, name=f"p{i}_{j}")
                else:
                    net.add_vccs(f"a{j}", f"x{i}", g * wij, name=f"n{i}_{j}")
            else:
                net.add_vccs(f"a{j}", f"x{i}", g * wij, name=f"w{i}_{j}")
        if b is not None and float(b[i]) != 0:
            net.add_vccs("one", f"x{i}", g * float(b[i]), name=f"b{i}")
    return net


def random_hopfield(n: int, *, gain: float = 0.8, seed: int = 0, symmetric: bool = False,
                    bias_std: float = 0.5, v0_std: float = 0.5, **kwargs: Any) -> Netlist:
    """A seeded random tanh network of `n` nodes (`hopfield`) with ||W||_2 = gain (< 1: unique,
    globally attracting fixed point), bias ~ N(0, bias_std^2), v0 ~ N(0, v0_std^2), volts.
    `symmetric` makes W symmetric (a Hopfield energy exists)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=gen, dtype=torch.float64)
    if symmetric:
        w = w + w.T
    if n > 1 or float(w.abs().max()) > 0:
        w = w * (_check_real(gain, "gain", low=0.0) / float(torch.linalg.matrix_norm(w, ord=2)))
    b = bias_std * torch.randn(n, generator=gen, dtype=torch.float64)
    x0 = v0_std * torch.randn(n, generator=gen, dtype=torch.float64)
    kwargs.setdefault("name", f"hopfield{n}")
    return hopfield(w, b, v0=x0, **kwargs)
