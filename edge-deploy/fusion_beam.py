#!/usr/bin/env python3
"""edge-deploy, the kernel levers: what fusion saves, and what BEAM search buys. Part of edge_optimize.py
(--fusion, --beam); runs alone too.

Fusion. An elementwise chain y = f5(f4(f3(f2(f1(x))))) run one kernel per op reads and writes n elements five
times: 5 kernels, 10·n·bytes of traffic. Fused, it is one kernel that reads x and writes y once: the minimum,
2·n·bytes. A reduction (softmax's max and sum, layer norm's mean) must be stored before it is broadcast back, so
those need a few kernels even when fused. --fusion counts the kernels tinygrad schedules and the bytes they move
(its own estimate) for five expressions, fused and forced unfused (realize after every op), against the minimum
(inputs + output once), and times each with TinyJit replay and with eager dispatch (the graph rebuilt and
scheduled on every call, which is what TinyJit saves).

BEAM. tinygrad lowers each kernel with a heuristic (BEAM=0) or searches the N best of its candidate optimizations
(local sizes, upcasts, unrolls) by timing them on the device (BEAM=N; JITBEAM=N searches only kernels inside a
TinyJit). --beam times four kernels at each level of --beams, each level in a fresh process with BEAM=N and
IGNORE_BEAM_CACHE=1 so the search really runs; search (+ compile) time is reported apart from the kernel time.
A level equal to the BEAM already set in this process's environment is timed here instead (with the disk cache).
No mode flag: both.

Run it
  NV=1 JITBEAM=2 python3 edge-deploy/fusion_beam.py --fusion       # fusion with searched kernels, on a Jetson
  python3 edge-deploy/fusion_beam.py --beam --beams 0,2             # CPU: each search compiles every candidate
  python3 edge-deploy/fusion_beam.py --quick                        # smaller inputs, levels 0,1
Success: fusion cuts kernels and bytes in every expression; every BEAM level times every kernel.
"""
from __future__ import annotations
import json, os, subprocess, sys, time
from dataclasses import dataclass
from pathlib import Path

import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
from tinygrad import Tensor, TinyJit, Device, dtypes
from common import UserError, check
from common.bench import Bench
from edge_common import count_kernels


@dataclass
class FusionBeamConfig:
  small: bool = False              # smaller inputs (--quick)
  beams: tuple[int, ...] = (0, 1, 2)
  timed: dict | None = None
  quick: bool = False


# ---- the expressions: r is identity (fused) or Tensor.realize (one kernel per op) ---------------

def elementwise_chain(x, r): return r(r(r(r(r(x * 2.0) + 1.0).relu()) * x).exp2())
def matmul_bias_relu(x, w, b, r): return r(r(r(x @ w) + b).relu())
def softmax_rows(x, r):
  m = r(x.max(-1, keepdim=True))
  e = r(r(x - m).exp())
  return r(e / r(e.sum(-1, keepdim=True)))
def layer_norm(x, r):
  mu = r(x.mean(-1, keepdim=True))
  xc = r(x - mu)
  return r(xc * r(r(r(xc * xc).mean(-1, keepdim=True)) + 1e-5).rsqrt())
def conv_block(x, w, b, r): return r(r(r(x.conv2d(w)) + b.reshape(1, -1, 1, 1)).relu().max_pool2d(2))
def fused(t): return t
def unfused(t): return t.realize()


def fusion_cases(quick: bool) -> list[tuple[str, object, list[Tensor]]]:
  n, m, c = (256, 128, 16) if quick else (1024, 512, 32)
  def R(*s): return Tensor.randn(*s).realize()
  return [("elementwise chain (5 ops)", elementwise_chain, [R(n, n)]),
          ("matmul + bias + ReLU", matmul_bias_relu, [R(m, m), R(m, m), R(m)]),
          ("softmax over rows", softmax_rows, [R(n, n)]),
          ("layer norm", layer_norm, [R(n, n)]),
          ("conv 3x3 + bias + ReLU + maxpool", conv_block, [R(8, c, 32, 32), R(c, c, 3, 3), R(c)])]


def beam_kernels(quick: bool) -> list[tuple[str, object, list[Tensor]]]:
  n, d = (128, 256) if quick or ec.on_cpu() else (1024, 2048)      # a CPU's search compiles every candidate with clang: keep it small
  def H(*s): return Tensor.randn(*s, dtype=dtypes.half).realize()
  def R(*s): return Tensor.randn(*s).realize()
  return [(f"matmul {n}x{n} fp16", lambda a, b: a @ b, [H(n, n), H(n, n)]),
          (f"matvec 1x{d} @ {d}x{4 * d} fp16", lambda x, w: x @ w.T, [H(1, d), H(4 * d, d)]),
          (f"softmax {n}x{n} fp32", lambda x: x.softmax(-1), [R(n, n)]),
          ("conv block 8x16x32x32 fp32", lambda x, w: x.conv2d(w, padding=1).relu(), [Tensor.randn(8, 16, 32, 32).realize(), R(16, 16, 3, 3)])]


# ---- measuring ---------------------------------------------------------------------------------

def measure_fusion(cfg: FusionBeamConfig, bench: Bench) -> list[dict]:
  """Kernels and bytes fused vs unfused, and median ms of fused/unfused JIT replay and fused eager dispatch."""
  results = []
  for name, expr, inputs in fusion_cases(cfg.small):
    out = expr(*inputs, fused).realize()
    k_f, b_f = count_kernels(lambda: expr(*inputs, fused))
    k_u, b_u = count_kernels(lambda: expr(*inputs, unfused))
    jit_f, jit_u = TinyJit(lambda *t: expr(*t, fused).realize()), TinyJit(lambda *t: expr(*t, unfused).realize())
    t_f = bench.run(f"{name}: fused, JIT", lambda: jit_f(*inputs), **cfg.timed)["median_ms"]
    t_u = bench.run(f"{name}: unfused, JIT", lambda: jit_u(*inputs), **cfg.timed)["median_ms"]
    t_e = bench.run(f"{name}: fused, eager", lambda: expr(*inputs, fused).realize(), **cfg.timed)["median_ms"]
    results.append({"expr": name, "kernels_fused": k_f, "kernels_unfused": k_u, "bytes_fused": b_f, "bytes_unfused": b_u,
                    "bytes_min": sum(t.nbytes() for t in inputs) + out.nbytes(), "ms_fused_jit": t_f, "ms_unfused_jit": t_u, "ms_fused_eager": t_e})
  return results


def time_beam_kernels(cfg: FusionBeamConfig, bench: Bench, level: int) -> None:
  """The BEAM kernels, JIT'd, at the BEAM level this process runs with."""
  for name, fn, inputs in beam_kernels(cfg.small):
    jit = TinyJit(lambda *t, fn=fn: fn(*t).realize())
    bench.run(f"{name} BEAM={level}", lambda: jit(*inputs), warmup=2, **cfg.timed)


# ---- success checks ---------------------------------------------------------------------------

def fusion_ok(results: list[dict]) -> bool:
  cut = sum(r["kernels_fused"] < r["kernels_unfused"] and r["bytes_fused"] <= r["bytes_unfused"] for r in results)
  return check("expressions where fusion cut kernels and bytes", cut, len(results))


def beam_ok(cfg: FusionBeamConfig, table: dict) -> bool:
  timed = sum(len(by_level) for by_level in table.values())
  return check("BEAM levels x kernels timed", timed, len(cfg.beams) * len(beam_kernels(cfg.small)))


# --- plumbing: BEAM levels in fresh processes, tables, CLI, main ---------------------------------

def level_here(level: int) -> bool:
  """Is `level` the BEAM this process already runs its JIT'd kernels with (BEAM set, JITBEAM unset or equal)?"""
  beam, jitbeam = os.environ.get("BEAM"), os.environ.get("JITBEAM")
  return beam == str(level) and jitbeam in (None, str(level))


def beam_level(cfg: FusionBeamConfig, level: int, bench: Bench, out: Path) -> list[dict]:
  """Records of one BEAM level: timed here, or by `python3 fusion_beam.py --beam --beams N` in a fresh process with
  BEAM=N and IGNORE_BEAM_CACHE=1 (JITBEAM removed, so it cannot override the level)."""
  if level_here(level):
    here = Bench(ec.PROJECT)
    time_beam_kernels(cfg, here, level)
    return here.records
  dest = out / f"beam{level}.json"
  dest.unlink(missing_ok=True)
  cmd = [sys.executable, os.path.abspath(__file__), "--beam", "--beams", str(level), "--json", str(dest), "--out", str(out / f"beam{level}")]
  env = {k: v for k, v in os.environ.items() if k != "JITBEAM"} | {"BEAM": str(level), "IGNORE_BEAM_CACHE": "1"}
  print(f"--- BEAM={level} in a fresh process (IGNORE_BEAM_CACHE=1) ---", flush=True)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd + (["--quick"] if cfg.quick else []), env=env)
  if proc.returncode not in (0, 1) or not dest.exists():
    raise UserError(f"the BEAM={level} process failed (exit {proc.returncode}); see its output above")
  print(f"    BEAM={level} process took {time.perf_counter() - t0:.1f} s")
  return json.loads(dest.read_text())["records"]


def run_beam(cfg: FusionBeamConfig, bench: Bench, out: Path, summary: dict) -> bool:
  table: dict = {}
  for level in cfg.beams:
    for r in beam_level(cfg, level, bench, out):
      bench.records.append(r)
      table.setdefault(r["case"].rsplit(" BEAM=", 1)[0], {})[level] = (r["median_ms"], sum(r["warmup_ms"]) / 1e3)
  print(f"\n### BEAM search on {Device.DEFAULT}: median ms (first-call search + compile s)\n")
  print("| kernel | " + " | ".join(f"BEAM={b}" for b in cfg.beams) + " |\n|---|" + "---:|" * len(cfg.beams))
  for name, by_level in table.items():
    print(f"| {name} | " + " | ".join(f"{by_level[b][0]:.3g} ms ({by_level[b][1]:.1f} s)" if b in by_level else "-" for b in cfg.beams) + " |")
  summary["beam"] = {name: {str(b): {"median_ms": v[0], "search_s": v[1]} for b, v in lv.items()} for name, lv in table.items()}
  return beam_ok(cfg, table)


def run_fusion(cfg: FusionBeamConfig, bench: Bench, summary: dict) -> bool:
  results = summary["fusion"] = measure_fusion(cfg, bench)
  print(f"\n### fusion on {Device.DEFAULT}: kernels, MB moved (tinygrad's estimate) and median ms\n")
  print("| expression | kernels fused | unfused | MB fused | MB unfused | MB minimum | ms fused (JIT) | ms unfused (JIT) | ms fused (eager) |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in results:
    print(f"| {r['expr']} | {r['kernels_fused']} | {r['kernels_unfused']} | {r['bytes_fused'] / 1e6:.2f} | {r['bytes_unfused'] / 1e6:.2f} |"
          f" {r['bytes_min'] / 1e6:.2f} | {r['ms_fused_jit']:.3g} | {r['ms_unfused_jit']:.3g} | {r['ms_fused_eager']:.3g} |")
  return fusion_ok(results)


def run(cfg: FusionBeamConfig, bench: Bench, out: Path, summary: dict, modes=("fusion", "beam")) -> bool:
  ok = True
  if "fusion" in modes: ok &= run_fusion(cfg, bench, summary)
  if "beam" in modes: ok &= run_beam(cfg, bench, out, summary)
  return ok


def beam_levels(text: str) -> list[int]:
  """'0,1,2,4' -> [0, 1, 2, 4]"""
  import argparse
  try: levels = sorted({int(v) for v in text.split(",") if v.strip()})
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
  if not levels or levels[0] < 0 or levels[-1] > 64: raise argparse.ArgumentTypeError(f"{text!r} needs BEAM levels between 0 and 64")
  return levels


def add_flags(p) -> None:
  g = p.add_argument_group("fusion and BEAM (fusion_beam.py)")
  ec.add_flag(g, "--beams", type=beam_levels, default=None, help="BEAM levels to compare (default 0,1,2,4 on a GPU, 0,1,2 on a CPU; --quick 0,1)")


def config(p, args) -> FusionBeamConfig:
  beams = args.beams or ([0, 1] if args.quick else [0, 1, 2] if ec.on_cpu() else [0, 1, 2, 4])
  return FusionBeamConfig(small=args.quick, beams=tuple(beams), timed=ec.timing(args.quick), quick=args.quick)


def main() -> int:
  p = common.project_parser(ec.PROJECT, __doc__, save_help=None)
  g = p.add_argument_group("modes (none given: both)")
  g.add_argument("--fusion", action="store_true", help="kernels and bytes, fused vs unfused; JIT replay vs eager")
  g.add_argument("--beam", action="store_true", help="kernels timed at each BEAM level of --beams")
  add_flags(p)
  args = p.parse_args()
  if args.bench: p.error("--bench: --fusion and --beam are the timings here (add --json PATH for their records)")
  modes = [m for m in ("fusion", "beam") if getattr(args, m)] or ["fusion", "beam"]
  cfg = config(p, args)
  from common.cli import check_out_dir
  from common.files import save_json
  check_out_dir(args)
  bench, summary = Bench(ec.PROJECT), {"device": Device.DEFAULT, "modes": modes}
  ok = run(cfg, bench, Path(args.out), summary, modes)
  summary["bench"] = [{k: v for k, v in r.items() if k != "samples_ms"} for r in bench.records]
  save_json(summary, Path(args.out) / "summary.json")
  bench.write_json(args.json)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
