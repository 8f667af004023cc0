"""Hardware benchmark: the cost of a force evaluation on analog hardware, and settles on PCM.

    .venv/bin/python benchmarks/hardware.py [--quick] [--repeats 15] [--threads 1]
        [--out benchmarks/results/hardware.json] [--md benchmarks/results/hardware.md]

Part 1, force evaluation at B8 T64 C128 (4 heads, context 64, vocab 256), under torch.no_grad as
the integrators call it, for the same nominal weights:
* digital: the model without hardware (hardware=None);
* ideal hardware: `HardwareConfig.ideal()`: ideal devices, no converters, no read noise, uniform
  tau; every map still goes through its crossbar (effective weight from conductances, tiles).
  The ratio to it isolates what a device model costs; the ratio of ideal hardware to digital is
  the cost of the crossbar machinery itself;
* pcm: the `HardwareConfig()` defaults (PCM, quenched read noise: one draw per settle, 10 % tau
  spread, no converters): the target is <= 1.5x ideal hardware;
* pcm white: a fresh read-noise draw per evaluation (2 normal draws per device pair);
* pcm 8-bit: 8-bit DAC and ADC in the loop (a hybrid chip);
* pcm power probe: one evaluation of the energy observer the hardware settle runs once per step.
Timing: interleaved round robin over the variants (so drifting load on shared cores hits all of
them alike), warm-up rounds first, then the median of `--repeats` rounds; ratios are of medians.

Part 2, settles on PCM: the `analogeq settle` default (vocab 64, d_model 64, 4 heads, context 32,
batch 4, seed 0, PCM defaults, tol 1e-6) for every registered default method, with the same
options as the CLI: status, NFE, force residual, settling time (us), energy (nJ/sample), median
wall of `--settle-repeats` runs after one warm-up run (whose results are reported; every method and
run settles the same operator: one frozen read-noise draw, as in the CLI, so runs repeat exactly).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from analogeq.integrators.settle import METHODS

from analogeq.hardware import HardwareConfig
from analogeq.model import EquilibriumTransformer, ModelConfig
from analogeq.report import hardware_row

HERE = Path(__file__).resolve().parent

DEFAULT_OUT = HERE / "results" / "hardware.json"
DEFAULT_MD = HERE / "results" / "hardware.md"
SETTLE_METHODS = ("euler", "adaptive", "imex", "implicit", "anderson", "ode")


def force_variants(quick: bool) -> dict[str, HardwareConfig | None]:
    out: dict[str, HardwareConfig | None] = {
        "digital": None,
        "ideal hardware": HardwareConfig.ideal(seed=0),
        "pcm": HardwareConfig(seed=0),
    }
    if not quick:
        out["pcm white"] = HardwareConfig(seed=0, read_noise="white")
        out["pcm 8-bit"] = HardwareConfig(seed=0, dac_bits=8, adc_bits=8)
    return out


def bench_force(batch: int, T: int, C: int, heads: int, repeats: int, warmup: int,
                quick: bool) -> dict[str, Any]:
    cfg = ModelConfig(vocab_size=256, d_model=C, n_heads=heads, context=T)
    tokens = torch.randint(0, 256, (batch, T), generator=torch.Generator().manual_seed(0))
    calls: dict[str, Any] = {}
    z = None
    for name, hw in force_variants(quick).items():
        model = EquilibriumTransformer(cfg, hw, seed=0)
        force = model.force(tokens)
        if z is None:
            z = model.initial_state(force).clone()
        calls[name] = force
        if name == "pcm":
            calls["pcm power probe"] = force.power
    assert z is not None
    walls: dict[str, list[float]] = {k: [] for k in calls}
    with torch.no_grad():
        for rnd in range(warmup + repeats):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn(z)
                dt = time.perf_counter() - t0
                if rnd >= warmup:
                    walls[name].append(dt)
    med = {k: statistics.median(v) for k, v in walls.items()}
    rows = []
    for name in calls:
        rows.append({
            "variant": name,
            "median_ms": med[name] * 1e3,
            "vs_digital": med[name] / med["digital"],
            "vs_ideal_hardware": med[name] / med["ideal hardware"],
            "walls_ms": [w * 1e3 for w in walls[name]],
        })
    return {"shape": {"batch": batch, "T": T, "C": C, "heads": heads}, "rows": rows,
            "pcm_vs_ideal": med["pcm"] / med["ideal hardware"],
            "pcm_vs_digital": med["pcm"] / med["digital"], "target_pcm_vs_ideal": 1.5}


def bench_settle(repeats: int) -> list[dict[str, Any]]:
    from analogeq.cli import _ODE_ATOL, _ODE_CHUNK, _ODE_RTOL

    cfg = ModelConfig(vocab_size=64, d_model=64, n_heads=4, context=32)
    model = EquilibriumTransformer(cfg, HardwareConfig(seed=0), seed=0)
    tokens = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(0))
    eps = torch.finfo(model.dtype).eps
    rows = []
    model.resample_read_noise()  # one frozen draw for every method and repeat, as the CLI does
    for name in [m for m in SETTLE_METHODS if m in METHODS]:
        opts: dict[str, Any] = {"resample_read_noise": False}
        if name == "ode":  # as the CLI runs it
            opts.update(chunk=_ODE_CHUNK, ode_rtol=max(_ODE_RTOL, 10 * eps),
                        ode_atol=max(_ODE_ATOL, eps))
        first = model.settle(tokens, name, tol=1e-6, **opts)
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.settle(tokens, name, tol=1e-6, **opts)
            walls.append(time.perf_counter() - t0)
        row = hardware_row(name, first)
        row["wall_s"] = statistics.median(walls)
        row["walls_s"] = walls
        row["ms_per_nfe"] = 1e3 * row["wall_s"] / first.nfe
        rows.append(row)
    return rows


def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(result: dict[str, Any], command: str) -> str:
    f = result["force"]
    s = f["shape"]
    lines = [
        "## Analog hardware (benchmarks/hardware.py)",
        "",
        f"Command: `{command}` ({result['threads']} thread(s), torch {result['torch']}, "
        f"{result['machine']}, {result['date']}). Shared cores: absolute times are noisy; "
        "read the ratios (medians of interleaved rounds).",
        "",
        f"**Force evaluation** at B{s['batch']} T{s['T']} C{s['C']} (H{s['heads']}), no_grad, "
        f"median of {result['repeats']} interleaved rounds after {result['warmup']} warm-up "
        "rounds. Target: PCM <= 1.5x ideal hardware.",
        "",
        "| variant | median (ms) | vs digital | vs ideal hardware |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in f["rows"]:
        lines.append(f"| {r['variant']} | {r['median_ms']:.2f} | {r['vs_digital']:.2f}x | "
                     f"{r['vs_ideal_hardware']:.2f}x |")
    ok = "met" if f["pcm_vs_ideal"] <= f["target_pcm_vs_ideal"] else "NOT met"
    lines += [
        "",
        f"PCM (defaults: quenched read noise, tau spread 0.1, no converters) costs "
        f"{f['pcm_vs_ideal']:.2f}x ideal hardware and {f['pcm_vs_digital']:.2f}x the digital "
        f"model: target {ok}. 'ideal hardware' is `HardwareConfig.ideal()` (every map read "
        "through its crossbar, exact devices); 'pcm white' draws read noise on every evaluation; "
        "'pcm 8-bit' puts 8-bit DACs and ADCs in the loop; 'pcm power probe' is the energy "
        "observer the hardware settle evaluates once per step.",
        "",
        "**Settles on PCM**: the `analogeq settle` default (vocab 64, d_model 64, 4 heads, "
        "context 32, batch 4, seed 0, PCM defaults, tol 1e-6 on the force residual), median wall "
        f"of {result['settle_repeats']} runs after a warm-up run. Settling time = t * tau on the "
        "method's own clock (ode = the continuous reference, chunk 0.25 tau); energy = crossbar "
        "dissipation per sample. Wall includes the energy observer (one power probe per step).",
        "",
        "| method | status | NFE | force residual | settle (us) | energy (nJ) | wall (s) | "
        "ms / NFE |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["settle"]:
        lines.append(
            f"| {r['method']} | {r['status']} | {r['nfe']} | {r['force_residual']:.2e} | "
            f"{fmt(r['settle_us'], '.3g')} | {fmt(r['energy_nj'], '.3g')} | {r['wall_s']:.3f} | "
            f"{r['ms_per_nfe']:.2f} |")
    lines += [
        "",
        "Root-finders (anderson) have no time, hence no settling time or energy. The implicit "
        "method's large steps are not physical time (its settling time is on its own clock).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer variants and repeats")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds of force evaluations")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--settle-repeats", type=int, default=3, help="timed runs per settle")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--md", type=Path, default=DEFAULT_MD)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 5 if args.quick else args.repeats
    settle_repeats = 1 if args.quick else args.settle_repeats
    command = "python benchmarks/hardware.py " + " ".join(shlex.quote(a) for a in (argv or
                                                                                  sys.argv[1:]))
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
    force = bench_force(8, 64, 128, 4, repeats, args.warmup, args.quick)
    for r in force["rows"]:
        print(f"  force {r['variant']:16s} {r['median_ms']:8.2f} ms  {r['vs_digital']:.2f}x "
              f"digital  {r['vs_ideal_hardware']:.2f}x ideal hardware")
    settle_rows = bench_settle(settle_repeats)
    for r in settle_rows:
        print(f"  settle {r['method']:9s} {r['status']:10s} nfe {r['nfe']:4d} res "
              f"{r['force_residual']:.2e} settle {fmt(r['settle_us'], '.3g')} us energy "
              f"{fmt(r['energy_nj'], '.3g')} nJ wall {r['wall_s']:.3f} s")
    result = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "warmup": args.warmup,
        "settle_repeats": settle_repeats,
        "command": command.strip(),
        "force": force,
        "settle": settle_rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    args.md.write_text(markdown(result, command.strip()))
    print(f"wrote {args.out} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
