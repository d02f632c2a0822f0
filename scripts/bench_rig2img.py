"""Stage 3a training and rendering cost with and without region decoders, side by side.

    python scripts/bench_rig2img.py                          # the demo renderer at 64 and 128 px, patch 32
    python scripts/bench_rig2img.py --size 256 --preset official --batch 32 --device cuda

Times one avatar's optimiser step (forward, L1 loss, backward, Adam) and its no-grad forward at the
training batch, for the plain generator and for the same generator with `region_patch` decoders on
three boxes (two eyes and a mouth, the demo head's). The two networks alternate within each round, so
a drift in this machine's speed hits them alike; the first round is a warm-up and is not counted.
Prints ms per step and the ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rig2img.models import build_renderer, preset  # noqa: E402

BOXES = [[0.2878, 0.3259, 0.4708, 0.5266], [0.5292, 0.3259, 0.7122, 0.5266], [0.2833, 0.5398, 0.7167, 0.8162]]
N_CONTROLS = 26


def timed(fn, device: torch.device, steps: int) -> float:
    """Seconds for `steps` calls of fn()."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


class Case:
    """One network with its optimiser and a fixed batch; `train()` is one optimiser step, `render()` a forward."""

    def __init__(self, net: torch.nn.Module, batch: int, size: int, device: torch.device):
        self.net, self.opt = net.to(device), torch.optim.Adam(net.parameters())
        self.rig = torch.rand(batch, N_CONTROLS, device=device)
        self.mask, self.avatar = torch.ones_like(self.rig), torch.zeros(batch, dtype=torch.long, device=device)
        self.target = torch.rand(batch, 3, size, size, device=device)
        self.params = sum(p.numel() for p in net.parameters()) / 1e6

    def train(self) -> None:
        loss = (self.net(self.rig, self.mask, self.avatar) - self.target).abs().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def render(self) -> None:
        self.net.eval()(self.rig, self.mask, self.avatar)
        self.net.train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--preset", default="demo", help="rig2img.models preset ('demo': with the demo config's widths)")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="steps per network per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    demo_widths = dict(base_channels=32, max_channels=128) if a.preset == "demo" else {}  # configs/demo/rig2img.yaml
    for size in a.size:
        cases = {name: Case(build_renderer([N_CONTROLS], preset(a.preset, image_size=size, widths=[], region_patch=p,
                                                                **demo_widths), [BOXES]), a.batch, size, device)
                 for name, p in (("plain", 0), (f"region {a.patch}", a.patch))}
        t = {(name, kind): 0.0 for name in cases for kind in ("train", "render")}
        for r in range(a.rounds + 1):
            for name, case in cases.items():
                for kind in ("train", "render"):
                    s = timed(getattr(case, kind), device, a.steps)
                    t[name, kind] += s if r else 0.0  # round 0: warm-up
        for kind in ("train", "render"):
            ms = {name: 1000 * t[name, kind] / (a.rounds * a.steps) for name in cases}
            plain, region = ms.values()
            print(f"{size} px, batch {a.batch}, {kind}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
                  + f" (x{region / plain:.2f}); parameters "
                  + ", ".join(f"{k} {c.params:.2f} M" for k, c in cases.items()), flush=True)


if __name__ == "__main__":
    main()
