"""Where a step's time goes, kernel by kernel: common.profile on the U-Net DDPM step or the conv autoencoder
step of generative_models.py, or style_transfer.py's VGG-19 Adam step at 512 px, at the shapes of
scripts/step_bench.py, or on one decode step of a GGUF model (edge-deploy/llm.py --gguf's JIT'd step, with
the matvec fix as llm.py sets it).

    DEV=CUDA python3 scripts/profile_step.py --step unet --top 30
    python3 scripts/profile_step.py --step ae --batch 8          # CPU: a small batch, minutes of compiling
    python3 scripts/profile_step.py --step ae --time 5           # the step's median time instead
    DEV=CUDA python3 scripts/profile_step.py --step ae --half    # the mixed-precision step
    DEV=CUDA python3 scripts/profile_step.py --step vgg          # VGG-19 at 512 px (--batch: the image side)
    DEV=CUDA python3 scripts/profile_step.py --step decode --gguf out/llama1b-Q4_0.gguf

Each kernel's time is its median over the replays with a synchronize after each kernel (JIT=2); GFLOP/s
and GB/s are tinygrad's own estimates per kernel, as DEBUG=2 prints them. Kernel names carry the loop
shape: r_..._128_14_14 is a reduction over a batch of 128 and 14×14 pixels (a weight gradient).
"""
from __future__ import annotations
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "generative"), str(ROOT / "edge-deploy"), str(ROOT / "style-transfer")]
from common.cli import ArgumentParser, existing_file, positive_int, run_main  # noqa: E402


def main() -> int:
  p = ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--step", choices=("unet", "ae", "vgg", "decode"), default="unet",
                 help="the DDPM U-Net step (width 64), the autoencoder step, VGG-19's Adam step on one image, or a GGUF model's decode step (--gguf)")
  p.add_argument("--gguf", type=existing_file, default=None, help="the GGUF file of --step decode")
  p.add_argument("--batch", type=positive_int, default=None, help="batch size (default 128); --step vgg: the image side (default 512)")
  p.add_argument("--half", action="store_true", help="the mixed-precision step (generative_models.py --half: fp16 convolutions, loss scaling)")
  p.add_argument("--top", type=positive_int, default=25, help="kernels to list")
  p.add_argument("--time", type=positive_int, default=None, metavar="N",
                 help="instead of the profile: the median wall time of N JIT'd steps after 3 warm-up steps (synchronized)")
  args = p.parse_args()
  if (args.step == "decode") != (args.gguf is not None): p.error("--step decode and --gguf PATH go together")
  if args.step == "decode" and (typed := [f for f in ("time", "half", "batch") if f"--{f}" in sys.argv]):
    p.error(f"--{typed[0]} is for the training steps; --step decode profiles one token of batch 1")
  if args.step == "vgg" and args.half: p.error("--half is for the U-Net and autoencoder steps (style transfer's fp16 is its --bench-dtypes fp16)")
  if args.step == "decode": return profile_decode(args)
  import numpy as np
  from tinygrad import Tensor
  import generative_models as gm
  from common.profile import profile_step, profile_table
  rng, b = np.random.default_rng(0), args.batch or (512 if args.step == "vgg" else 128)
  if args.step == "vgg":
    import style_transfer as st
    net = st.make_net(st.StyleConfig(net="vgg19"))      # random weights: the timing does not depend on them
    content, style = st.to_tensor(st.demo_content(b, b)), st.to_tensor(st.demo_style(b, b))
    problem = st.StyleProblem(net, content, style, content, st.DEFAULT_WEIGHTS["vgg19"], {n: 1.0 for n in net.style_layers},
                              "adam", st.DEFAULT_LR["adam"])
    step, inputs = problem.step, ()
  elif args.step == "unet":
    step = gm.make_ddpm_step(gm.UNet(1, 64, 0), gm.UNet(1, 64, 0), gm.Schedule("linear", 1000), 1e-3, 0.1, args.half)
    inputs = (Tensor(rng.uniform(-1, 1, (b, 1, 28, 28)).astype(np.float32)), Tensor(rng.integers(0, 10, b).astype(np.int32)), Tensor([0.999]))
  else:
    step = gm.make_ae_step(gm.Autoencoder(3, 32, 32), 1e-3, args.half)
    inputs = (Tensor(rng.random((b, 3, 32, 32), dtype=np.float32)),)
  inputs = tuple(t.realize() for t in inputs)
  what = f"VGG-19 Adam step on one image, {b} px" if args.step == "vgg" else f"{args.step} train step{' (fp16)' if args.half else ''}, batch {b}"
  if args.time:
    import statistics, time
    from tinygrad import Device
    for _ in range(3): step(*inputs)
    times = []
    for _ in range(args.time):
      t0 = time.perf_counter()
      step(*inputs)
      Device[Device.DEFAULT].synchronize()
      times.append(time.perf_counter() - t0)
    print(f"{what}: median {statistics.median(times) * 1e3:.1f} ms over {args.time} steps")
    return 0
  rows, wall = profile_step(step.fxn, *inputs)     # .fxn: the step before TinyJit wraps it
  print(f"## {what}\n" + profile_table(rows, wall, top=args.top))
  return 0


def profile_decode(args) -> int:
  """One decode step at position 8 after a 4-token prefill: the kernels llm.py --gguf replays per token."""
  import os
  if os.environ.get("MATVEC_FIX", "1") != "0":             # on, as llm.py --gguf sets it (common read the variable at import)
    import backend
    backend.install_matvec_fix()
  from tinygrad import dtypes
  import edge_common as ec
  import gguf_model as gm
  from common.profile import profile_step, profile_table
  f, cfg, _ = gm.open_checked(args.gguf)
  model = gm.GGUFModel(f, cfg, 64, dtypes.float32 if ec.on_cpu() else dtypes.half)   # the KV cache as llm.py --gguf keeps it
  model.prefill([1, 2, 3, 4])
  rows, wall = profile_step(model._step, model.token_var.bind(5), model.pos_var.bind(8), iters=5)
  print(f"## decode step of {Path(args.gguf).name}\n" + profile_table(rows, wall, top=args.top))
  return 0


if __name__ == "__main__":
  sys.exit(run_main(main))
