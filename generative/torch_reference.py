"""PyTorch timing of the same conv-autoencoder training step that generative_models.py --bench times.

The model is generative_models.Autoencoder layer for layer (conv3x3/2 32 -> conv3x3/2 64 -> linear L,
linear -> upsample x2 + conv3x3 32 -> upsample x2 + conv3x3 C -> sigmoid, SiLU between), trained with
MSE and Adam (lr 1e-3) on random 3x32x32 batches of 32 and 128, the shape of the anchors table. The
case names equal the tinygrad ones, so common.compare can put the two JSON files side by side.

    python3 generative/torch_reference.py --json out/generative/torch.json        # cuda if present, else cpu
    python3 generative/torch_reference.py --device cpu --quick

torch is not a dependency of this repo; without it this prints one line and exits with status 2.
"""
from __future__ import annotations
import common  # noqa: F401  (one-line errors and the bench harness; tinygrad is never used here)
import sys

from common import UserError, project_parser, run_main
from common.bench import TF32_MODES, torch_tf32
from common.cli import positive_int

PROJECT = "generative"


def main(argv=None) -> int:
  p = project_parser(PROJECT, __doc__, save_help=None)   # it trains nothing to keep: no --save/--load
  p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
  p.add_argument("--latent", type=positive_int, default=32, help="latent size L, as in generative_models.py")
  p.add_argument("--tf32", choices=TF32_MODES, default="default", help="TF32 tensor cores for fp32 convs/matmuls (default: PyTorch's own, cuDNN on)")
  p.add_argument("--compile", action="store_true", help="also time torch.compile'd step (slow first call)")
  args = p.parse_args(argv)
  try:
    import torch
    from torch import nn
  except ImportError:
    raise UserError("PyTorch is not installed (pip install torch); it is only needed for this comparison")
  from common.bench import Bench

  dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  try: torch.empty(1, device=dev)
  except (RuntimeError, AssertionError) as e: raise UserError(f"torch device {dev!r} is not usable: {str(e).splitlines()[0]}")
  torch.manual_seed(args.seed)
  sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
  tf32 = torch_tf32(torch, args.tf32)

  class Autoencoder(nn.Module):
    def __init__(self, channels: int, size: int, latent: int):
      super().__init__()
      self.side = size // 4
      self.enc1, self.enc2 = nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.Conv2d(32, 64, 3, stride=2, padding=1)
      self.to_latent, self.from_latent = nn.Linear(64 * self.side ** 2, latent), nn.Linear(latent, 64 * self.side ** 2)
      self.dec1, self.dec2 = nn.Conv2d(64, 32, 3, padding=1), nn.Conv2d(32, channels, 3, padding=1)
      self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
      act = nn.functional.silu
      z = self.to_latent(act(self.enc2(act(self.enc1(x)))).flatten(1))
      h = act(self.from_latent(z)).reshape(x.shape[0], 64, self.side, self.side)
      return torch.sigmoid(self.dec2(self.up(act(self.dec1(self.up(h))))))

  bench = Bench(PROJECT, device=f"torch:{dev}", renderer=f"torch {torch.__version__}")
  iters = dict(warmup=3, iters=5 if args.quick else 20, max_seconds=5 if args.quick else 30, sync=sync)
  for b in ([32] if args.quick else [32, 128]):
    for compiled in ((False, True) if args.compile else (False,)):
      model = Autoencoder(3, 32, args.latent).to(dev)
      opt = torch.optim.Adam(model.parameters(), lr=1e-3)
      fwd = torch.compile(model) if compiled else model
      x = torch.rand(b, 3, 32, 32, device=dev)

      def step():
        opt.zero_grad(set_to_none=True)
        loss = ((fwd(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

      bench.run(f"AE train step b={b} 3x32x32" + (" (torch.compile)" if compiled else ""), step, rate=(b, "images/s"), tf32=tf32, **iters)
  bench.print(f"{PROJECT}: PyTorch reference, conv autoencoder train step (TF32 {tf32})")
  bench.write_json(args.json)
  return 0


if __name__ == "__main__":
  sys.exit(run_main(main))
