"""Which kernels of a training step a heuristic rule changes: every kernel of the step is scheduled and its
optimizations chosen for the Orin's GPU (PTX for sm_87, as tinygrad renders it; nothing is compiled or run, no
GPU needed), once with the rule and once without, and the kernels whose choices differ are listed.

    python3 scripts/heuristic_diff.py --step ae            # the split rule (SPLIT_REDUCE) in the AE's step
    python3 scripts/heuristic_diff.py --step unet --env MV   # any 0/1 switch of backend/patches/matvec.py

Each row: kernel index, outputs, terms per output (the sum's length), then the optimizations without and with.
"""
from __future__ import annotations
import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "generative"), str(ROOT / "audio-ml")]
os.environ.setdefault("DEV", "NULL")      # nothing runs: kernels are only scheduled and their optimizations chosen
os.environ["MATVEC_FIX"] = "0"            # the patch is installed below, by hand


def step_tensors(step: str) -> list:
  """The tensors one training step realizes (lazy: nothing runs)."""
  from tinygrad import Tensor, nn
  from tinygrad.helpers import Context
  from common.mixed import LossScaler
  with Context(TRAINING=1):
    if step in ("ae", "unet"):
      import generative_models as gm
      model = gm.Autoencoder(3, 32, 32) if step == "ae" else gm.UNet(1, 64, 0)
      x = Tensor.empty(128, *((3, 32, 32) if step == "ae" else (1, 28, 28)))
      out = model(x).contiguous() if step == "ae" else model(x, Tensor.empty(128, dtype="int32"))
      loss = ((out - x) ** 2).mean()
    else:
      from audio_classify import AudioCNN, SYNTH_CLASSES, spec_augment
      from logmel import LogMel, MelConfig
      cfg = MelConfig()
      frontend, model = LogMel(cfg), AudioCNN(len(SYNTH_CLASSES), [16, 32, 64], cfg.n_mels)
      loss = model(spec_augment(frontend(Tensor.empty(64, cfg.sample_rate)))).sparse_categorical_crossentropy(Tensor.empty(64, dtype="int32"))
    scaler = LossScaler(nn.optim.Adam(nn.state.get_parameters(model), lr=1e-3), enabled=False)
    scaler.backward(loss)
    return scaler.schedule_step() + [loss]


def kernel_choices(step: str, env: str) -> dict[str, list[tuple[int, int, list[str]]]]:
  """{"0": rows, "1": rows}: each kernel's (outputs, terms, optimizations) with the switch off and on."""
  import backend
  backend.install_matvec_fix()
  from tinygrad.helpers import prod, Target, getenv
  from tinygrad.uop.ops import Ops, AxisType
  from tinygrad.renderer.ptx import PTXRenderer
  from tinygrad.codegen.opt.postrange import Scheduler
  from backend.patches.matvec import applied_opts
  ren = PTXRenderer(Target("CUDA", "PTX", "sm_87"))
  tensors = step_tensors(step)
  asts = [c.src[0] for c in tensors[0].schedule_linear(*tensors[1:]).toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
  runs = {}
  for value in ("0", "1"):
    os.environ[env] = value
    getenv.cache_clear()                       # tinygrad's getenv is memoized: the patch reads the switch afresh
    rows = []
    for ast in asts:
      k = Scheduler(ast, ren)
      terms = prod(k.full_shape[i] for i in k.axes_of(AxisType.REDUCE)) if k.reduceop is not None else 0
      opts = [f"{o.op.name}({o.axis},{o.arg})" for o in applied_opts(ast, ren)]
      rows.append((int(prod(k.output_shape[i] for i in k.upcastable_dims)), int(terms), opts))
    runs[value] = rows
  return runs


def main() -> int:
  from common.cli import ArgumentParser
  p = ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--step", choices=("ae", "unet", "audio"), default="ae", help="the autoencoder, U-Net (width 64) or audio CNN step")
  p.add_argument("--env", default="SPLIT_REDUCE", help="the 0/1 switch to compare (default SPLIT_REDUCE)")
  args = p.parse_args()
  runs = kernel_choices(args.step, args.env)
  changed = [(i, a, b) for i, (a, b) in enumerate(zip(runs["0"], runs["1"])) if a != b]
  print(f"{args.step} step: {len(runs['0'])} kernels, {len(changed)} changed by {args.env}=1\n")
  print(f"| kernel | outputs | terms | {args.env}=0 | {args.env}=1 |\n|---:|---:|---:|---|---|")
  for i, a, b in changed: print(f"| {i} | {a[0]:,} | {a[1]:,} | {' '.join(a[2])} | {' '.join(b[2])} |")
  return 0


if __name__ == "__main__":
  from common.cli import run_main
  sys.exit(run_main(main))
