"""PyTorch timing of the training steps that generative_models.py --bench times, model for model.

- The autoencoder is generative_models.Autoencoder layer for layer (conv3x3/2 32 -> conv3x3/2 64 -> linear L,
  linear -> upsample x2 + conv3x3 32 -> upsample x2 + conv3x3 C -> sigmoid, SiLU between), trained with
  MSE and Adam (lr 1e-3) on random 3x32x32 batches.
- The DDPM step is generative_models.UNet layer for layer (sinusoidal time embedding -> MLP; res blocks of
  GroupNorm, SiLU, conv3x3 with the time embedding added; stride-2 conv downsampling; one-head attention
  at S/4; nearest x2 upsampling + conv3x3; skips by concatenation), with the same loss
  ||ε - ε_θ(x_t, t, y)||², random t and ε drawn on the device, Adam and the EMA update.
Batches of 32 and 128, the shapes of the anchors table. The case names equal the tinygrad ones, so
common.compare can put the two JSON files side by side.

    python3 generative/torch_reference.py --json out/generative/torch.json        # cuda if present, else cpu
    python3 generative/torch_reference.py --model diffusion --width 64 --compile  # the DDPM step, eager and compiled
    python3 generative/torch_reference.py --model diffusion --width 64 --batch 128 --half  # fp16 autocast + GradScaler
    python3 generative/torch_reference.py --device cpu --quick

torch is not a dependency of this repo; without it this prints one line and exits with status 2.
"""
from __future__ import annotations
import common  # noqa: F401  (one-line errors and the bench harness; tinygrad is never used here)
import math, sys

from common import UserError, project_parser, run_main
from common.bench import TF32_MODES, torch_tf32
from common.cli import positive_int

PROJECT = "generative"


def main(argv=None) -> int:
  p = project_parser(PROJECT, __doc__, save_help=None)   # it trains nothing to keep: no --save/--load
  p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
  p.add_argument("--latent", type=positive_int, default=32, help="latent size L, as in generative_models.py")
  p.add_argument("--model", choices=("autoencoder", "diffusion", "all"), default="all", help="which training steps to time")
  p.add_argument("--width", type=positive_int, default=16, help="U-Net base channels C, as in generative_models.py")
  p.add_argument("--size", type=int, choices=(28, 32), default=28, help="DDPM image side (1 channel)")
  p.add_argument("--cond", action="store_true", help="class-conditional U-Net (label embedding, labels dropped 10 %% of the time)")
  p.add_argument("--T", type=positive_int, default=1000, help="diffusion steps (the linear schedule of generative_models.py)")
  p.add_argument("--tf32", choices=TF32_MODES, default="default", help="TF32 tensor cores for fp32 convs/matmuls (default: PyTorch's own, cuDNN on)")
  p.add_argument("--compile", action="store_true", help="also time torch.compile'd step (slow first call)")
  p.add_argument("--half", action="store_true", help="mixed precision, as generative_models.py --half: fp16 autocast, fp32 weights, a GradScaler")
  p.add_argument("--batch", type=positive_int, default=None, help="time this batch size only (default 32 and 128; --quick 32)")
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

  def group_norm(c): return nn.GroupNorm(min(8, c // 4), c)

  class ResBlock(nn.Module):
    def __init__(self, cin, cout, td):
      super().__init__()
      self.norm1, self.conv1, self.temb = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1), nn.Linear(td, cout)
      self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
      self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
      act = nn.functional.silu
      h = self.conv1(act(self.norm1(x))) + self.temb(temb)[:, :, None, None]
      h = self.conv2(act(self.norm2(h)))
      return (self.skip(x) if self.skip is not None else x) + h

  class SelfAttention(nn.Module):
    def __init__(self, c):
      super().__init__()
      self.norm, self.qkv, self.proj = group_norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
      b, c, h, w = x.shape
      q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).permute(1, 0, 3, 2)
      out = nn.functional.scaled_dot_product_attention(q, k, v).permute(0, 2, 1).reshape(b, c, h, w)
      return x + self.proj(out)

  class UNet(nn.Module):
    def __init__(self, channels, width, n_classes):
      super().__init__()
      c1, c2, td = width, 2 * width, 4 * width
      self.width, self.n_classes = width, n_classes
      self.temb1, self.temb2 = nn.Linear(width, td), nn.Linear(td, td)
      self.label_emb = nn.Embedding(n_classes + 1, td) if n_classes else None
      self.conv_in = nn.Conv2d(channels, c1, 3, padding=1)
      self.down0, self.pool0 = ResBlock(c1, c1, td), nn.Conv2d(c1, c1, 3, stride=2, padding=1)
      self.down1, self.pool1 = ResBlock(c1, c2, td), nn.Conv2d(c2, c2, 3, stride=2, padding=1)
      self.down2, self.attn_down = ResBlock(c2, c2, td), SelfAttention(c2)
      self.mid1, self.attn_mid, self.mid2 = ResBlock(c2, c2, td), SelfAttention(c2), ResBlock(c2, c2, td)
      self.up2, self.attn_up = ResBlock(c2 + c2, c2, td), SelfAttention(c2)
      self.upconv1, self.up1 = nn.Conv2d(c2, c2, 3, padding=1), ResBlock(c2 + c2, c1, td)
      self.upconv0, self.up0 = nn.Conv2d(c1, c1, 3, padding=1), ResBlock(c1 + c1, c1, td)
      self.norm_out, self.conv_out = group_norm(c1), nn.Conv2d(c1, channels, 3, padding=1)
      nn.init.zeros_(self.conv_out.weight)
      nn.init.zeros_(self.conv_out.bias)
      half = width // 2
      self.register_buffer("freqs", torch.exp(-math.log(10000) * torch.arange(half) / half))

    def forward(self, x, t, y=None):
      act, up = nn.functional.silu, (lambda h: nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
      angles = t.float()[:, None] * self.freqs[None, :]
      temb = self.temb2(act(self.temb1(torch.cat([angles.sin(), angles.cos()], dim=1))))
      if self.label_emb is not None and y is not None: temb = temb + self.label_emb(y)
      temb = act(temb)
      h0 = self.down0(self.conv_in(x), temb)
      h1 = self.down1(self.pool0(h0), temb)
      h2 = self.attn_down(self.down2(self.pool1(h1), temb))
      h = self.mid2(self.attn_mid(self.mid1(h2, temb)), temb)
      h = self.attn_up(self.up2(torch.cat([h, h2], dim=1), temb))
      h = self.up1(torch.cat([self.upconv1(up(h)), h1], dim=1), temb)
      h = self.up0(torch.cat([self.upconv0(up(h)), h0], dim=1), temb)
      return self.conv_out(act(self.norm_out(h)))

  bench = Bench(PROJECT, device=f"torch:{dev}", renderer=f"torch {torch.__version__}")
  iters = dict(warmup=3, iters=5 if args.quick else 20, max_seconds=5 if args.quick else 30, sync=sync)
  batch_sizes = [args.batch] if args.batch else [32] if args.quick else [32, 128]
  # --half: the forward and the loss under fp16 autocast, the update through a loss-scaling GradScaler (fp32 weights)
  autocast = lambda: torch.autocast(device_type=dev.split(":")[0], dtype=torch.float16, enabled=args.half)  # noqa: E731
  suffix = " fp16" if args.half else ""
  for b in (batch_sizes if args.model in ("autoencoder", "all") else []):
    for compiled in ((False, True) if args.compile else (False,)):
      model = Autoencoder(3, 32, args.latent).to(dev)
      opt = torch.optim.Adam(model.parameters(), lr=1e-3)
      scaler = torch.amp.GradScaler(dev.split(":")[0], enabled=args.half)
      fwd = torch.compile(model) if compiled else model
      x = torch.rand(b, 3, 32, 32, device=dev)

      def step():
        opt.zero_grad(set_to_none=True)
        with autocast(): loss = ((fwd(x).float() - x) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

      bench.run(f"AE train step b={b} 3x32x32{suffix}" + (" (torch.compile)" if compiled else ""), step, rate=(b, "images/s"), tf32=tf32, **iters)
  # the linear β schedule of generative_models.beta_schedule: 1e-4 -> 0.02, scaled by 1000/T
  alpha_bar = torch.cumprod(1 - torch.linspace(0.1 / args.T, 20 / args.T, args.T, dtype=torch.float64), 0)
  sqrt_ab, sqrt_1m_ab = alpha_bar.sqrt().float().to(dev), (1 - alpha_bar).sqrt().float().to(dev)
  n_classes, s = (10 if args.cond else 0), args.size
  for b in (batch_sizes if args.model in ("diffusion", "all") else []):
    for compiled in ((False, True) if args.compile else (False,)):
      unet, ema = UNet(1, args.width, n_classes).to(dev), UNet(1, args.width, n_classes).to(dev)
      ema.load_state_dict(unet.state_dict())
      opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
      scaler = torch.amp.GradScaler(dev.split(":")[0], enabled=args.half)
      fwd = torch.compile(unet) if compiled else unet
      x0 = torch.rand(b, 1, s, s, device=dev) * 2 - 1
      y = torch.randint(0, 10, (b,), device=dev)
      decay = 0.999

      def ddpm_step():
        t = torch.randint(0, args.T, (b,), device=dev)
        eps = torch.randn_like(x0)
        yy = torch.where(torch.rand(b, device=dev) < 0.1, n_classes, y) if n_classes else None
        xt = sqrt_ab[t].reshape(-1, 1, 1, 1) * x0 + sqrt_1m_ab[t].reshape(-1, 1, 1, 1) * eps
        with autocast(): loss = ((fwd(xt, t, yy).float() - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        with torch.no_grad(): torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - decay)
        return loss

      case = f"DDPM train step b={b} 1x{s}x{s} width {args.width}{suffix}" + (" (torch.compile)" if compiled else "")
      bench.run(case, ddpm_step, rate=(b, "images/s"), tf32=tf32, params=sum(p.numel() for p in unet.parameters()), **iters)
  bench.print(f"{PROJECT}: PyTorch reference, autoencoder and DDPM train steps (TF32 {tf32})")
  bench.write_json(args.json)
  return 0


if __name__ == "__main__":
  sys.exit(run_main(main))
