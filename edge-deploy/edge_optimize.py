#!/usr/bin/env python3
"""edge-deploy: the practical toolkit for putting models on a Jetson Orin, where every claim is measured.

A Jetson Orin AGX has 64 GB of memory shared by CPU and GPU and about 204.8 GB/s of DRAM bandwidth
(≈ 102 GB/s is what real kernels reach). Those two numbers, not FLOPs, decide most of edge deployment.
Each lever has a script of its own beside this one, a tutorial in its docstring; this script runs them in
one process, with one set of flags, one summary.json and one --json:

  --quantize  quantize.py     matmul GFLOP/s in fp32/fp16; a digit CNN trained here, in fp32, fp16 and int8
                              weight-only (s_o = max_i |W_oi| / 127, q = round(W / s_o)): accuracy, bytes, latency
  --distill   quantize.py     a 4x narrower student, alone and with L = α·T²·KL(p_t ‖ p_s) + (1 − α)·CE, 3 seeds
  --memory    memory_plan.py  weights, activations, grads + Adam, KV cache and the decode bound
                              tok/s ≤ BW / bytes per token, checked against tinygrad's allocator; what fits
  --fusion    fusion_beam.py  kernels and bytes fused vs one kernel per op; TinyJit replay vs eager dispatch
  --beam      fusion_beam.py  four kernels at BEAM 0, 1, 2, 4, each level in a fresh process
  --llm       llm.py          a LLaMA-shaped decoder with a KV cache, fp16 and int8, against the copy bandwidth,
                              with the backend's matvec fix off and on (MATVEC_FIX=0 / 1)
No mode flag, or --all: every mode. --bench times the hot paths instead: matmul, CNN inference in three
precisions, the copy kernel and the decode (for common.compare).

Run it
  Jetson:  NV=1 python3 edge-deploy/edge_optimize.py --all          (or --quantize, --memory, --llm, ...)
           NV=1 JITBEAM=2 python3 edge-deploy/edge_optimize.py --fusion    (tinygrad searches the kernels)
  laptop:  python3 edge-deploy/edge_optimize.py --quantize --distill  (CPU; --quick for a seconds-long pass)
  bench:   NV=1 python3 edge-deploy/edge_optimize.py --bench --json out/edge.json
Flags worth trying: --llm-config llama3.2-3b | tiny | "dim,layers,heads,kv_heads,hidden,vocab";
--temperature and --alpha for distillation; --sizes for the matmul sweep; --beams 0,2. A flag that belongs to a
mode this run leaves out is refused, so nothing is silently ignored. Outputs in --out (out/edge-deploy/):
summary.json (every table), cnn_loss.png, distillation.png; --json PATH writes the timing records.

What to expect: README.md has every table with its command and machine. On any device the CNN reaches about
99.7 % on held-out synthetic digits in all three precisions, int8 weights taking a quarter of the fp32 bytes, and
the planner matches tinygrad's allocator within 0.5 % at the default settings. A CPU has no fast fp16 path, so fp16 runs *slower* there;
the 2x is a GPU property. On an Orin (planned, not measured): LLaMA 3.2 1B fp16 reads 2.5 GB per token, so decode
is bounded by ~41 tok/s at 102 GB/s with a short context; int8 roughly doubles it.
"""
from __future__ import annotations
import sys
from pathlib import Path

import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
from tinygrad import Device
from common.bench import Bench
import fusion_beam, llm, memory_plan, quantize

# --- plumbing: the math lives in the lever scripts; this file gathers their flags and runs them ---------------

MODES = ("quantize", "distill", "memory", "fusion", "beam", "llm")
# flags of one lever: given while none of its modes runs, they would be ignored, so they are refused
FLAG_MODES = {"sizes": ("quantize",), "width": ("quantize", "distill", "memory"), "steps": ("quantize", "distill"),
              "train_size": ("quantize", "distill"), "test_size": ("quantize", "distill"), "student_width": ("distill",),
              "temperature": ("distill",), "alpha": ("distill",), "save": ("quantize", "distill"), "load": ("quantize", "distill"),
              "beams": ("beam",), "llm_config": ("llm",), "llm_tokens": ("llm",), "matvec_fix": ("llm",), "copy_mib": ("llm",)}
BENCH_FLAGS = {"sizes", "width", "llm_config", "llm_tokens", "copy_mib", "seed", "json", "out", "quick", "bench"}


def parse_args(argv=None):
  p = common.project_parser(ec.PROJECT, __doc__, save_help="the trained digit CNN (.safetensors; --quantize, --distill)",
                            load_help="a CNN written by --save, evaluated instead of training one (--quantize, --distill)")
  g = p.add_argument_group("modes (none given: all)")
  for m in MODES: g.add_argument(f"--{m}", action="store_true", help=f"run the {m} mode (see the module docstring)")
  g.add_argument("--all", action="store_true", help="every mode")
  for lever in (quantize, memory_plan, fusion_beam, llm): lever.add_flags(p)
  args = p.parse_args(argv)
  modes = [m for m in MODES if getattr(args, m) and not args.all] or list(MODES)
  check_flags(p, args, modes)
  return p, args, modes


def check_flags(p, args, modes) -> None:
  """Refuse what this run would silently ignore: a lever's flag without its mode, --json where nothing is timed."""
  if args.bench:
    if set(modes) != set(MODES): p.error(f"--bench times the hot paths of every lever; drop --{modes[0]}")
    extra = sorted(args.given - BENCH_FLAGS - {"all"})
    if extra: p.error(f"--{extra[0].replace('_', '-')} does not change --bench (it times matmul, CNN inference, the copy and the decode)")
  for dest, used_by in FLAG_MODES.items():
    if dest in args.given and not args.bench and not set(used_by) & set(modes):
      p.error(f"--{dest.replace('_', '-')} is a setting of --{' / --'.join(used_by)}, which this run leaves out")
  if args.json and set(modes) == {"memory"}:
    p.error("--json writes timing records and --memory times nothing; its tables go to summary.json in --out")
  if args.llm_config is not None:
    try: llm.parse_llama_config(args.llm_config)
    except Exception as e: p.error(f"argument --llm-config: {e}")


def run_bench(p, args, bench: Bench) -> None:
  """The hot paths, for common.compare: matmul, CNN inference in three precisions, copy kernel, LLM decode."""
  quantize.run_bench(quantize.config(p, args, ["quantize"]), bench)
  res = llm.decode_here(llm.config(p, args), bench)
  for name, r in res["runs"].items():
    print(f"llm decode {name}: {r['achieved_GBps']:.3g} GB/s = {100 * r['fraction_of_copy_bw']:.1f} % of copy bandwidth")


def run_levers(p, args, modes, bench: Bench, out: Path, summary: dict) -> bool:
  """Each lever's configuration first (so every flag is checked before any work), then each lever's run."""
  runs = []
  if {"quantize", "distill"} & set(modes):
    cfg = quantize.config(p, args, modes)
    runs.append(lambda: quantize.run(cfg, bench, out, summary, [m for m in modes if m in ("quantize", "distill")]))
  if "memory" in modes:
    mem = memory_plan.config(p, args)
    runs.append(lambda: memory_plan.run(mem, summary))
  if {"fusion", "beam"} & set(modes):
    fb = fusion_beam.config(p, args)
    runs.append(lambda: fusion_beam.run(fb, bench, out, summary, [m for m in modes if m in ("fusion", "beam")]))
  if "llm" in modes:
    dec = llm.config(p, args)
    runs.append(lambda: llm.run(dec, bench, out, summary))
  ok = True
  for run in runs: ok &= run()
  return ok


def main() -> int:
  import time
  from common.cli import check_out_dir
  from common.files import save_json
  p, args, modes = parse_args()
  common.seed_all(args.seed)
  bench = Bench(ec.PROJECT)
  if args.bench:
    run_bench(p, args, bench)
    bench.print()
    bench.write_json(args.json)
    return 0
  check_out_dir(args)
  summary: dict = {"device": Device.DEFAULT, "modes": modes, "args": {k: v for k, v in vars(args).items() if k != "given"}}
  t0 = time.perf_counter()
  ok = run_levers(p, args, modes, bench, Path(args.out), summary)
  summary["wall_s"] = time.perf_counter() - t0
  summary["bench"] = [{k: v for k, v in r.items() if k != "samples_ms"} for r in bench.records]
  save_json(summary, Path(args.out) / "summary.json")
  bench.write_json(args.json)
  print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {summary['wall_s']:.0f} s; tables and figures in {args.out}/")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
