#!/usr/bin/env python3
"""edge-deploy, the model zoo: the image classifiers people deploy on a Jetson (ResNet-18, ResNet-50, MobileNetV2,
EfficientNet-B0, VGG-16) in tinygrad, with torchvision's weights, timed the way jetson-inference reports them.

The models (zoo_models.py, a tutorial of its own) use torchvision's state-dict keys and shapes exactly, so a
torchvision `.pth` (read by tinygrad's torch_load) or `.safetensors` loads with --weights; the first missing,
unexpected or mis-shaped key is refused in one line. BatchNorm's num_batches_tracked is optional (torchvision's
own older weight files lack it). Without weights the models get random weights of the right shapes: speed does
not depend on the values. With weights, --image classifies a photo with ImageNet's preprocessing:
    resize the short side to 256 (bilinear; bicubic for EfficientNet, as torchvision's weights were made),
    center crop 224, x = (rgb − mean) / std, mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225)
and prints the top-5 classes (softmax over the 1000 logits; labels in imagenet_classes.txt, torchvision's list).

--bench, per model and precision (fp32, fp16; TF32 = fp32 with ALLOW_TF32=1 tensor cores, on CUDA/NV only):
    batch 1      latency p50 / p99 (ms): what one camera frame waits
    batch 32     throughput (images/s): what a server-style batch reaches
each forward one TinyJit (from the 3rd call it replays the captured kernels, so JITBEAM=N searches them), and
    kernels      launched per inference (common.bench.jit_kernel_count, every kernel inside a GPU graph)
    GFLOP/s      tinygrad's own FLOP count of one replay (GlobalCounters.global_ops) / the median time
    memory       GlobalCounters.mem_used after the capture, less what was in use before the model was made:
                 weights + input + the JIT's activation buffers, beside memory_plan.py's estimate
                 (weights + 2 × the largest activation map × batch, the planner's inference rule)
Every convolution goes through common.conv (the repo's shared convolution; depthwise = groups; backward=False, the
inference rule: in fp16 on a GPU every conv with one group, stride-1 1x1 ones aside, is a stored patch matrix times the
weights, for tensor cores).

Run it
  python3 edge-deploy/model_zoo.py                          # every model, random weights: layout check vs torchvision's
                                                            #   published parameter counts, one forward each (CPU: a minute)
  python3 edge-deploy/model_zoo.py --model resnet50 --weights resnet50.pth --image cat.jpg      # top-5
  NV=1 python3 edge-deploy/model_zoo.py --bench --json out/zoo-orin.json                       # Jetson
  python3 -m common.compare edge-deploy/model_zoo.py --backends NV,CUDA,CPU -- --quick        # side by side
  python3 edge-deploy/zoo_torch_reference.py --json out/zoo-torch.json                         # PyTorch, same cases
Flags: --model (comma list), --precisions fp32,fp16,tf32, --size (px), --batch (throughput batch); --quick: 64 px,
batch 4, fewer samples. What to expect: README.md (model zoo) has the measured figures with their commands; none
from an Orin yet. A CPU has no fast fp16, so fp16 is slower there.
"""
from __future__ import annotations
import gc, os, sys
from dataclasses import dataclass, field
from pathlib import Path

import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
import numpy as np
from tinygrad import Tensor, TinyJit, Device, GlobalCounters, Context, dtypes
from common import UserError, check
from common.bench import Bench, jit_kernel_count
import zoo_models as zm

LABELS = os.path.join(ec.HERE, "imagenet_classes.txt")
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
PRECISIONS = ("fp32", "fp16", "tf32")


@dataclass
class ZooConfig:
  models: tuple[str, ...] = tuple(zm.MODELS)
  precisions: tuple[str, ...] = ("fp32", "fp16")
  size: int = 224                 # image side for --bench (and the demo's forward pass)
  batch: int = 32                 # throughput batch
  seed: int = 0
  weights: str | None = None
  image: str | None = None
  timed: dict = field(default_factory=dict)     # Bench.run keywords


# ---- the inference path ---------------------------------------------------------------------

def preprocess(rgb: np.ndarray, size: int = 224, bicubic: bool = False) -> np.ndarray:
  """(H, W, 3) in [0, 1] -> (1, 3, size, size): short side to size·256/224, center crop, ImageNet mean/std."""
  from PIL import Image
  h, w = rgb.shape[:2]
  short = round(size * 256 / 224)
  nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
  im = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).resize((nw, nh), Image.BICUBIC if bicubic else Image.BILINEAR)
  a = np.asarray(im, np.float32) / 255
  top, left = round((nh - size) / 2), round((nw - size) / 2)
  a = (a[top:top + size, left:left + size] - MEAN) / STD
  return a.transpose(2, 0, 1)[None].astype(np.float32)


def top5(logits: np.ndarray, labels: list[str]) -> list[tuple[int, str, float]]:
  """(class index, label, softmax probability) of the 5 largest logits."""
  p = np.exp(logits - logits.max())
  p /= p.sum()
  return [(int(i), labels[i], float(p[i])) for i in np.argsort(-p)[:5]]


def cast(state: dict[str, Tensor], precision: str) -> dict[str, Tensor]:
  """Float tensors to the compute dtype (tf32 is fp32 storage; the tensor cores round inside the matmul)."""
  dt = dtypes.half if precision == "fp16" else dtypes.float32
  return {k: (v.cast(dt) if dtypes.is_float(v.dtype) else v).realize() for k, v in state.items()}


def compute_dtype(precision: str): return dtypes.half if precision == "fp16" else dtypes.float32


# ---- benchmarks -----------------------------------------------------------------------------------

def planned_bytes(name: str, n_params: int, largest_activation: int, precision: str, batch: int) -> float:
  """memory_plan.py's inference estimate: weights + 2 × the largest activation map per image × batch."""
  import memory_plan as mp
  dt = "fp16" if precision == "fp16" else "fp32"
  spec = mp.ModelSpec(name, {dt: n_params}, act_elems=2 * largest_activation, act_dtype=dt)
  return mp.plan(spec, batch=batch)["total"]


def bench_case(bench: Bench, cfg: ZooConfig, name: str, state: dict, precision: str, batch: int, base_mem: int) -> dict:
  x = Tensor.randn(batch, 3, cfg.size, cfg.size, dtype=compute_dtype(precision)).realize()
  infer = TinyJit(lambda x: zm.forward(name, state, x).realize())
  with Context(ALLOW_TF32=int(precision == "tf32")):
    for _ in range(2): infer(x)                              # compile, then capture
    mem = GlobalCounters.mem_used - base_mem
    GlobalCounters.reset()
    infer(x)                                                 # one replay: tinygrad's FLOP count of the whole forward
    flops = GlobalCounters.global_ops
    case = f"{name} {precision} b={batch}"
    rate = None if batch == 1 else (batch, "images/s")
    rec = bench.run(case, lambda: infer(x), rate=rate, warmup=1, **cfg.timed)
  rec.update(model=name, precision=precision, batch=batch, size=cfg.size, kernels=jit_kernel_count(infer), gflop=flops / 1e9,
             gflops_per_s=flops / 1e9 / (rec["median_ms"] / 1e3), mem_bytes=mem)
  return rec


def run_bench(cfg: ZooConfig, bench: Bench) -> list[dict]:
  """Each model and precision at batch 1 and cfg.batch: latency, throughput, kernels, GFLOP/s, memory vs the plan."""
  rows = []
  for name in cfg.models:
    for precision in cfg.precisions:
      gc.collect()
      base_mem = GlobalCounters.mem_used
      p = zm.build(name, cfg.seed)
      state, n, act = cast(p.state, precision), zm.n_params(p.state), zm.largest_activation(name, cfg.size)
      del p                                                  # the fp32 originals of an fp16 model are freed before measuring
      gc.collect()
      for batch in dict.fromkeys((1, cfg.batch)):
        rec = bench_case(bench, cfg, name, state, precision, batch, base_mem)
        rec["planned_bytes"] = planned_bytes(name, n, act, precision, batch)
        rows.append(rec)
        gc.collect()
      del state
  print_bench(rows, cfg)
  return rows


def print_bench(rows: list[dict], cfg: ZooConfig) -> None:
  print(f"\n### model zoo on {Device.DEFAULT}, {cfg.size} px, random weights\n")
  print("| model | precision | batch | p50 ms | p99 ms | images/s | kernels | GFLOP/s | memory MB | planned MB |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['median_ms']:.3g} | {r['p99_ms']:.3g} | {r['batch'] / r['median_ms'] * 1e3:,.1f} | "
          f"{r['kernels']} | {r['gflops_per_s']:.3g} | {r['mem_bytes'] / 1e6:.1f} | {r['planned_bytes'] / 1e6:.1f} |")


# ---- the demo and its check ---------------------------------------------------------------------

def layout_ok(cfg: ZooConfig) -> dict:
  """Each model's parameter count against torchvision's published one, and one forward pass (finite logits)."""
  res, ok = {}, True
  for name in cfg.models:
    p = zm.build(name, cfg.seed)
    logits = zm.forward(name, p.state, Tensor.randn(1, 3, cfg.size, cfg.size)).numpy()
    n = zm.n_params(p.state)
    ok &= check(f"{name}: {n:,} parameters, off torchvision's {zm.TORCHVISION_PARAMS[name]:,} by", abs(n - zm.TORCHVISION_PARAMS[name]), 0,
                higher_is_better=False)
    ok &= check(f"{name}: non-finite logits of {logits.size}", int((~np.isfinite(logits)).sum()) + abs(logits.size - 1000), 0, higher_is_better=False)
    res[name] = {"params": n, "keys": len(p.state), "largest_activation": zm.largest_activation(name, cfg.size)}
  res["ok"] = ok
  return res


def classify(cfg: ZooConfig) -> dict:
  """--weights (and --image): load, check every key, and print the top-5 classes of the image."""
  from common.files import read_image
  name = cfg.models[0]
  state = load_weights(cfg.weights, name)
  if cfg.image is None:
    print(f"{cfg.weights}: {len(state)} tensors, every key and shape matches torchvision's {name}")
    return {"model": name, "weights": cfg.weights}
  x = preprocess(read_image(cfg.image), 224, bicubic=name.startswith("efficientnet"))
  logits = zm.forward(name, state, Tensor(x)).numpy()[0]
  labels = read_labels()
  print(f"\n{name} on {cfg.image}:")
  best = top5(logits, labels)
  for i, label, prob in best: print(f"  {prob * 100:6.2f} %  {label} (class {i})")
  return {"model": name, "weights": cfg.weights, "image": cfg.image, "top5": best}


# --- plumbing: files, CLI, main -------------------------------------------------------------------

def read_labels() -> list[str]:
  labels = Path(LABELS).read_text().splitlines()
  if len(labels) != 1000: raise UserError(f"{LABELS} has {len(labels)} labels, expected ImageNet's 1000")
  return labels


def load_weights(path: str, name: str) -> dict[str, Tensor]:
  """A torchvision state dict (.pth / .pt via torch_load, .safetensors) for model `name`, every key and shape checked."""
  from tinygrad.nn.state import safe_load, torch_load
  from common.files import check_state_matches
  p = Path(path)
  if not p.is_file(): raise UserError(f"weights {p}: no such file")
  if p.suffix not in (".pth", ".pt", ".safetensors"): raise UserError(f"weights {p}: expected a .pth, .pt or .safetensors file")
  try: state = dict((safe_load if p.suffix == ".safetensors" else torch_load)(str(p)))
  except Exception as e:
    raise UserError(f"weights {p} cannot be read as {p.suffix} ({' '.join(str(e).split())[:100] or type(e).__name__})") from None
  if state and all(k.startswith("module.") for k in state):
    raise UserError(f"weights {p}: keys start with 'module.' (a DataParallel checkpoint): save model.module.state_dict() instead")
  expected = {k: s for k, s in zm.layout(name).items() if not k.endswith("num_batches_tracked")}
  state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
  check_state_matches(expected, state, f"weights {p} for {name}")
  return {k: v.to(Device.DEFAULT).float().realize() for k, v in state.items()}


def parse_args(argv=None) -> tuple:
  p = common.project_parser(ec.PROJECT, __doc__, save_help=None)
  g = p.add_argument_group("model zoo (model_zoo.py)")
  g.add_argument("--model", default="all", help=f"comma list of {', '.join(zm.MODELS)}, or all")
  g.add_argument("--weights", metavar="PATH", default=None, help="a torchvision state dict (.pth or .safetensors) for the one --model")
  g.add_argument("--image", metavar="PATH", default=None, help="with --weights: print this image's top-5 ImageNet classes")
  g.add_argument("--precisions", default="fp32,fp16", help="comma list of fp32, fp16, tf32 (tf32: CUDA/NV only; with --bench)")
  g.add_argument("--size", type=ec.int_range(32, 1024), default=224, help="image side in px for --bench and the demo")
  g.add_argument("--batch", type=ec.int_range(1, 1024), default=32, help="throughput batch for --bench (batch 1 is always timed; 1: latency only)")
  p.preset("quick", size=64, batch=4)
  args = p.parse_args(argv)
  models = tuple(zm.MODELS) if args.model == "all" else tuple(m.strip() for m in args.model.split(",") if m.strip())
  bad = [m for m in models if m not in zm.MODELS]
  if bad or not models: p.error(f"--model {bad[0] if bad else args.model!r} is not one of {', '.join(zm.MODELS)} (or all)")
  precisions = tuple(x.strip() for x in args.precisions.split(",") if x.strip())
  if not precisions or any(x not in PRECISIONS for x in precisions): p.error(f"--precisions {args.precisions!r}: choose from {', '.join(PRECISIONS)}")
  if "tf32" in precisions and Device.DEFAULT not in ("CUDA", "NV"): p.error(f"--precisions tf32 needs a CUDA or NV device, not {Device.DEFAULT}")
  if args.weights and len(models) != 1: p.error("--weights is one model's state dict: give --model NAME")
  if args.image and not args.weights: p.error("--image needs --weights (random weights classify nothing)")
  if args.bench and args.weights: p.error("--bench times random weights (speed does not depend on the values); drop --weights")
  if not args.bench and args.json: p.error("--json writes --bench's timing records; add --bench")
  timed = ec.timing(args.quick)
  cfg = ZooConfig(models=models, precisions=precisions, size=args.size, batch=args.batch, seed=args.seed, weights=args.weights,
                  image=args.image, timed=timed)
  big = max(models, key=zm.TORCHVISION_PARAMS.get)
  ec.check_fits(3 * 4 * zm.TORCHVISION_PARAMS[big], f"{big}'s weights (random, a cast copy and numpy's)", p)
  return args, cfg


def main() -> int:
  from common.cli import check_out_dir
  from common.files import save_json
  args, cfg = parse_args()
  common.seed_all(args.seed)
  bench = Bench(ec.PROJECT)
  if args.bench:
    rows = run_bench(cfg, bench)
    bench.print("edge-deploy model zoo")
    bench.write_json(args.json)
    return 0 if rows else 1
  check_out_dir(args)
  summary: dict = {"device": Device.DEFAULT, "config": {k: v for k, v in cfg.__dict__.items() if k != "timed"}}
  if cfg.weights: summary["classify"], ok = classify(cfg), True
  else:
    summary["layout"] = layout_ok(cfg)
    ok = summary["layout"]["ok"]
  save_json(summary, Path(args.out) / "zoo_summary.json")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
