"""Per-device updates: pulses, write energy, clipping and realised-vs-requested error per preset.

One SGD step of an AsymEP-sized gradient on the CLI-sized block (C 32, H 4, T 16, float32),
for each device preset and update mode, from the same programmed chip (read noise off).
The gradient is a seeded Gaussian scaled so that the largest request is `steps` nominal pulses
(the pulse response's `weight_granularity`: dw_min for a linear step) of
that map. Prints a table, writes benchmarks/results/device_updates.json.

The machine is shared by several agents: walls are noisy; counts and errors are exact.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from analogeq.hardware import HardwareConfig
from analogeq.learning import DeviceUpdater
from analogeq.model import EquilibriumTransformer, ModelConfig

OUT = Path(__file__).parent / "results" / "device_updates.json"


def main(steps: float = 4.0) -> list[dict]:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_heads=4, context=16)
    rows = []
    for dev in ("ideal", "pcm", "rram", "ecram"):
        base = EquilibriumTransformer(
            cfg, hardware=HardwareConfig(device=dev, read_noise="off", seed=0), seed=0)
        gen = torch.Generator().manual_seed(1)
        grads = {}
        for name, analog in base.crossbars().items():
            m = analog.device_model
            dw = m.pulse.weight_granularity * m.g_range / float(analog.g_ref)
            g = torch.randn(analog.shape, generator=gen)
            grads[f"{name}.weight"] = g * (steps * dw / float(g.abs().max()))
        for mode in ("deterministic", "stochastic"):
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            rep = DeviceUpdater(mode, seed=0).apply(model, grads, 1.0)
            wall = time.perf_counter() - t0
            rows.append({"device": dev, "mode": mode, "pulses": rep.total_pulses,
                         "energy_j": rep.energy_j, "clipped": rep.clipped_fraction,
                         "rel_error": rep.rel_error, "wall_s": wall})
    print(f"{'device':7} {'mode':13} {'pulses':>8} {'energy J':>10} {'clipped':>8} "
          f"{'rel err':>8} {'wall s':>7}")
    for r in rows:
        print(f"{r['device']:7} {r['mode']:13} {r['pulses']:8d} {r['energy_j']:10.3e} "
              f"{r['clipped']:8.2%} {r['rel_error']:8.3f} {r['wall_s']:7.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"steps": steps, "config": cfg.to_dict(), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
