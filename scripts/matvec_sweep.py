"""Decode tok/s of one GGUF model under several matvec layouts of the heuristic patch (backend/patches/matvec.py:
MV_THREADS_PER_ROW, MV_BLOCKSIZE, MV_ROWS_PER_THREAD). The model is loaded once; for each layout tinygrad's getenv
memo and program cache are cleared and the decode step is captured afresh, then 40 greedy tokens are timed as
llm.py --gguf times them (each step ends with the next token read back).

    DEV=CUDA python3 scripts/matvec_sweep.py out/llama1b-Q4_0.gguf
    DEV=CUDA python3 scripts/matvec_sweep.py FILE --layouts "32,1,1;8,4,2"     # threads per row, rows per block, rows per thread
"""
from __future__ import annotations
import argparse, os, statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge-deploy")]
os.environ.setdefault("MATVEC_FIX", "1")          # the patch, as llm.py --gguf sets it (before common reads it)
from common.cli import ArgumentParser, existing_file, run_main  # noqa: E402

LAYOUTS = "32,1,1;16,4,1;8,4,1;8,4,2;16,2,2"


def parse_layouts(text: str) -> list[tuple[int, int, int]]:
  """'T,B,R;T,B,R' -> [(T, B, R), ...] (an argparse type)."""
  try: layouts = [tuple(int(v) for v in part.split(",")) for part in text.split(";")]
  except ValueError: layouts = []
  if not layouts or any(len(x) != 3 or min(x) < 1 for x in layouts):
    raise argparse.ArgumentTypeError(f"{text!r}: use T,B,R;T,B,R... with positive integers")
  return layouts


def main() -> int:
  p = ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("gguf", type=existing_file, help="the GGUF file")
  p.add_argument("--layouts", type=parse_layouts, default=parse_layouts(LAYOUTS),
                 help=f"T,B,R;... threads per row, rows per workgroup, rows per thread (default {LAYOUTS})")
  args = p.parse_args()
  from tinygrad import TinyJit, dtypes
  from tinygrad.helpers import getenv
  from tinygrad.codegen import to_program_cache
  from tinygrad.engine.worker import terminate_worker_pool
  import edge_common as ec
  import gguf_model as gm
  f, cfg, _ = gm.open_checked(args.gguf)
  model = gm.GGUFModel(f, cfg, 128, dtypes.float32 if ec.on_cpu() else dtypes.half)   # as llm.py --gguf
  weight_bytes = model.weight_bytes_per_token()
  print("| threads per row | rows per block | rows per thread | tok/s | ms/token (p10-p90) | GB/s of weights |\n|---:|---:|---:|---:|---:|---:|")
  for t, b, r in args.layouts:
    os.environ.update(MV_THREADS_PER_ROW=str(t), MV_BLOCKSIZE=str(b), MV_ROWS_PER_THREAD=str(r))
    getenv.cache_clear()                          # the patch reads the knobs through tinygrad's memoized getenv
    to_program_cache.clear()                      # and compiled programs are cached by kernel, not by layout
    terminate_worker_pool()                       # compile workers would keep the knobs they started with
    model.step_jit, model.pos, token, times = TinyJit(model._step), 0, 1, []
    for _ in range(45):
      t0 = time.perf_counter()
      _, greedy = model.step(token)
      token = int(greedy.item())
      times.append(time.perf_counter() - t0)
    s = sorted(times[5:])                         # after the JIT's capture
    med = statistics.median(s)
    print(f"| {t} | {b} | {r} | {1 / med:.1f} | {med * 1e3:.3f} ({s[len(s) // 10] * 1e3:.3f}-{s[9 * len(s) // 10] * 1e3:.3f}) "
          f"| {weight_bytes / med / 1e9:.0f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(run_main(main))
