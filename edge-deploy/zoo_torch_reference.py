#!/usr/bin/env python3
"""PyTorch baseline for model_zoo.py --bench: torchvision's same five classifiers (random weights, eval mode), timed with
the repo's harness at the same batches, precisions and image size, eagerly and with torch.compile.

    python3 edge-deploy/zoo_torch_reference.py --json out/zoo-torch.json          # CUDA if present, else CPU
    python3 edge-deploy/zoo_torch_reference.py --quick --model resnet18            # seconds-long settings

Case names are model_zoo.py's ("resnet50 fp16 b=32"), with " torch.compile" appended for the compiled runs, so the two
JSON files line up case by case. fp16 is the model and input in torch.float16 (what model_zoo.py does in tinygrad);
tf32 is fp32 with cuDNN's and cuBLAS's TF32 switches on, fp32 has them off (common.bench.torch_tf32), so each
precision means the same on both sides. Each record carries the peak CUDA memory the case allocated.
Optional: torch and torchvision are not dependencies of this repo; without them the script says so and exits with status 2.
"""
from __future__ import annotations
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
from common import UserError
from common.bench import Bench, torch_tf32

PROJECT = "edge-deploy"
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "vgg16")      # torchvision.models builders, as model_zoo.py names them
PRECISIONS = ("fp32", "fp16", "tf32")


# --- plumbing: flags, the timed loop, main ---------------------------------------------------------

def parse_args():
  from common.cli import int_range
  p = common.project_parser(PROJECT, __doc__, save_help=None)
  p.add_argument("--model", default="all", help=f"comma list of {', '.join(MODELS)}, or all")
  p.add_argument("--precisions", default="fp32,fp16", help="comma list of fp32, fp16, tf32 (tf32: CUDA only)")
  p.add_argument("--modes", default="eager,compile", help="eager, compile (torch.compile), or both")
  p.add_argument("--size", type=int_range(32, 1024), default=224, help="image side in px")
  p.add_argument("--batch", type=int_range(2, 1024), default=32, help="throughput batch (batch 1 is always timed)")
  p.preset("quick", size=64, batch=4)
  args = p.parse_args()
  args.models = list(MODELS) if args.model == "all" else [m.strip() for m in args.model.split(",") if m.strip()]
  args.precision_list = [x.strip() for x in args.precisions.split(",") if x.strip()]
  args.mode_list = [x.strip() for x in args.modes.split(",") if x.strip()]
  if not args.models or any(m not in MODELS for m in args.models): p.error(f"--model {args.model!r}: choose from {', '.join(MODELS)} or all")
  if not args.precision_list or any(x not in PRECISIONS for x in args.precision_list):
    p.error(f"--precisions {args.precisions!r}: choose from fp32, fp16, tf32")
  if not args.mode_list or any(x not in ("eager", "compile") for x in args.mode_list): p.error(f"--modes {args.modes!r}: choose from eager, compile")
  return args


def main() -> int:
  args = parse_args()
  try:
    import torch, torchvision
  except ImportError:
    raise UserError("PyTorch and torchvision are not installed (pip install torch torchvision); they are only needed for this optional baseline")
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  if "tf32" in args.precision_list and dev != "cuda": raise UserError("--precisions tf32 needs a CUDA device")
  cuda = dev == "cuda"
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  torch.manual_seed(args.seed)
  bench = Bench(PROJECT, device="torch:" + dev, renderer="torch " + torch.__version__)
  timed = {"iters": 5, "max_seconds": 0.3} if args.quick else {"iters": 10, "max_seconds": 2.0}
  for name in args.models:
    for precision in args.precision_list:
      switches = torch_tf32(torch, "on" if precision == "tf32" else "off") if cuda else "cpu"
      dtype = torch.float16 if precision == "fp16" else torch.float32
      model = getattr(torchvision.models, name)(weights=None).eval().to(dev, dtype)
      for mode in args.mode_list:
        net = model if mode == "eager" else torch.compile(model)
        for batch in dict.fromkeys((1, args.batch)):
          x = torch.randn(batch, 3, args.size, args.size, device=dev, dtype=dtype)
          def infer(net=net, x=x):
            with torch.inference_mode(): return net(x)
          if cuda: torch.cuda.reset_peak_memory_stats()
          case = f"{name} {precision} b={batch}" + ("" if mode == "eager" else " torch.compile")
          rec = bench.run(case, infer, rate=None if batch == 1 else (batch, "images/s"), sync=sync, warmup=3, **timed)
          rec.update(model=name, precision=precision, batch=batch, size=args.size, mode=mode, tf32=switches,
                     mem_bytes=torch.cuda.max_memory_allocated() if cuda else None)
      del model
  bench.print(f"{PROJECT} model zoo, PyTorch reference")
  bench.write_json(args.json)
  return 0


if __name__ == "__main__":
  sys.exit(common.run_main(main))
