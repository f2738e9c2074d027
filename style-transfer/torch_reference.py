"""PyTorch reference for style_transfer.py --bench: the same Adam (and L-BFGS) step through torchvision's
VGG-19 layout with random weights, same losses, same shapes, timed with the same harness.

  One step = forward of the image through vgg19().features[:29] (conv1_1 … conv5_1, average pooling),
  content loss at conv4_2, Gram-matrix style loss at conv1_1 … conv5_1, TV loss, backward to the image
  only (weights frozen), optimizer update. Peak memory is torch.cuda.max_memory_allocated() around the
  timed steps (on the CPU there is no such counter: reported as 0).

    DEV=CUDA python3 style-transfer/torch_reference.py --size 512 --json out/torch.json
    python3 style-transfer/torch_reference.py --size 64 --device cpu          # any machine with torch

torch is optional and not a dependency of this repo; without it the script says so and exits 2.
torchvision is used for the layers when installed, otherwise the same nn.Sequential is built by hand
(identical indices, so state-dict keys features.0 … features.34 match).
"""
import common  # noqa: F401  (one-line errors, same flags as the tinygrad script)
import sys

from common import UserError
from common.bench import TF32_MODES, Bench, torch_tf32
from common.cli import int_list, int_range

PROJECT = "style-transfer"
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
STYLE_IDX = {"conv1_1": 0, "conv2_1": 5, "conv3_1": 10, "conv4_1": 19, "conv5_1": 28}
CONTENT_IDX = 21   # conv4_2


def vgg19_features(torch, pool):
  try:
    import torchvision
    feats = torchvision.models.vgg19(weights=None).features
  except ImportError:
    layers, cin = [], 3
    for v in CFG:
      if v == "M":
        layers.append(torch.nn.MaxPool2d(2, 2))
        continue
      layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
      cin = v
    feats = torch.nn.Sequential(*layers)
  if pool == "avg":    # Gatys: average pooling; same indices, so weights load the same way
    for i, m in enumerate(feats):
      if isinstance(m, torch.nn.MaxPool2d): feats[i] = torch.nn.AvgPool2d(2, 2)
  for m in feats:
    if isinstance(m, torch.nn.ReLU): m.inplace = False   # the features we keep must not be overwritten
  return feats[:30]     # up to conv5_1 and its ReLU


def parse_args():
  p = common.project_parser(PROJECT, __doc__, quick_help="64 px, about 5 s per case", save_help=None)   # it trains nothing: no --save
  p.add_argument("--sizes", type=int_list, default=[256, 512], help="square image sizes")
  p.add_argument("--size", type=int_range(16, 4096), default=None, help="one size (instead of --sizes)")
  p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
  p.add_argument("--pool", choices=["avg", "max"], default="avg")
  p.add_argument("--tf32", choices=TF32_MODES, default="default", help="TF32 tensor cores for fp32 convs/matmuls (default: PyTorch's own, cuDNN on)")
  p.add_argument("--half", action="store_true", help="also time fp16 (autocast) steps")
  p.preset("quick", sizes=[64])
  args = p.parse_args()
  if not all(16 <= v <= 4096 for v in args.sizes): p.error("--sizes: each from 16 to 4096 px (VGG-19 pools four times before conv5_1)")
  if args.size and "sizes" in args.given: p.error("give --size or --sizes, not both")
  return args


def main() -> int:
  args = parse_args()
  try:
    import torch
  except ImportError:
    raise UserError("PyTorch is not installed (pip install torch); it is only needed for this comparison")
  dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  try: torch.zeros(1, device=dev)
  except (RuntimeError, AssertionError) as e: raise UserError(f"--device {dev}: {' '.join(str(e).split())[:150]}")
  tf32 = torch_tf32(torch, args.tf32)
  torch.manual_seed(args.seed)
  net = vgg19_features(torch, args.pool).to(dev).eval()
  for w in net.parameters(): w.requires_grad_(False)
  mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
  bench = Bench(PROJECT, device="torch:" + dev, renderer="torch " + torch.__version__)

  def features(x):
    out, h = {}, (x - mean) / std
    for i, layer in enumerate(net):
      h = layer(h)
      if i - 1 in STYLE_IDX.values() or i - 1 == CONTENT_IDX: out[i - 1] = h   # after the conv's ReLU
    return out

  for size in [args.size] if args.size else args.sizes: time_steps(torch, bench, features, size, dev, tf32, args)
  bench.print(f"{PROJECT}: PyTorch reference (TF32 {tf32})")
  for r in bench.records: print(f"  {r['case']}: peak {r['device_mem_MB']:.1f} MB")
  bench.write_json(args.json)
  return 0


def gram(f):
  _, c, h, w = f.shape
  flat = f.reshape(c, h * w).float()
  return flat @ flat.T / (c * h * w)


def time_steps(torch, bench: Bench, features, size: int, dev: str, tf32: str, args) -> None:
  """Adam and L-BFGS steps (and their fp16 autocast versions with --half) at one square size."""
  import numpy as np
  cuda = dev.startswith("cuda")
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  rng = np.random.default_rng(args.seed)
  content = torch.tensor(rng.random((1, 3, size, size), dtype=np.float32), device=dev)
  style = torch.tensor(rng.random((1, 3, size, size), dtype=np.float32), device=dev)
  with torch.no_grad():
    content_target = features(content)[CONTENT_IDX].float()
    style_grams = {i: gram(f) for i, f in features(style).items() if i in STYLE_IDX.values()}
  for half in [False, True] if args.half else [False]:
    for opt_name in ("adam", "lbfgs"):
      image = content.clone().requires_grad_(True)
      opt = torch.optim.Adam([image], lr=0.02) if opt_name == "adam" else torch.optim.LBFGS([image], lr=1.0, max_iter=1, history_size=10)

      def closure():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.float16, enabled=half):
          feats = features(image)
        lc = ((feats[CONTENT_IDX].float() - content_target) ** 2).mean()
        ls = sum(((gram(feats[i]) - style_grams[i]) ** 2).mean() for i in STYLE_IDX.values())
        ltv = ((image[:, :, 1:] - image[:, :, :-1]) ** 2).mean() + ((image[:, :, :, 1:] - image[:, :, :, :-1]) ** 2).mean()
        loss = lc + 1e6 * ls + 1e-2 * ltv
        loss.backward()
        return loss

      step = (lambda: opt.step(closure)) if opt_name == "lbfgs" else (lambda: (closure(), opt.step()))
      if cuda: torch.cuda.reset_peak_memory_stats()
      rec = bench.run(f"vgg19 {size}px {'fp16' if half else 'fp32'} {opt_name} step", step, rate=(1, "steps/s"),
                      iters=5 if args.quick else 20, max_seconds=5.0 if args.quick else 20.0, sync=sync, tf32=tf32)
      rec["device_mem_MB"] = torch.cuda.max_memory_allocated() / 1e6 if cuda else 0.0
      opt = image = None     # free this case's memory before the next one


if __name__ == "__main__":
  sys.exit(common.run_main(main))
