"""Where a JIT'd step spends its time: the top kernels, each with its time, GFLOP/s, GB/s and share.

    from common.profile import profile_step, print_profile
    rows = profile_step(train_step, x, y)       # a plain function of Tensors (this captures its own TinyJit)
    print_profile(rows, top=20)

The step is captured with JIT=2, so every kernel is its own launch rather than a GPU graph, then
replayed `iters` times with a device synchronize after each kernel (tinygrad's DEBUG=2 timing, without
its printing). Each kernel's time is the median over the replays; operations and bytes are tinygrad's
own estimates for the kernel, so GFLOP/s and GB/s read as in DEBUG=2. Replays run the step for real
(an optimizer step updates its weights): profile on a model you can spare. Launch gaps are not in the
sum, so the share column is of kernel time, and `overhead` is the wall time the kernels do not explain.
"""
from __future__ import annotations
import contextlib, io, statistics, time
from dataclasses import dataclass
from typing import Callable


@dataclass
class KernelTime:
  name: str
  seconds: float           # median over replays
  ops: float               # tinygrad's estimate per call
  mem_bytes: float
  calls: int = 1           # kernels of the same name in one step, summed

  @property
  def gflops(self) -> float: return self.ops / self.seconds / 1e9 if self.seconds > 0 else 0.0
  @property
  def gbs(self) -> float: return self.mem_bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


def profile_step(fn: Callable, *args, iters: int = 3) -> tuple[list[KernelTime], float]:
  """-> (kernels sorted by time, the step's median wall time in seconds with per-kernel syncs)."""
  from tinygrad import TinyJit, Device
  from tinygrad.engine import realize
  from tinygrad.helpers import Context
  from tinygrad.uop.ops import sym_infer
  jit = TinyJit(fn)
  with Context(JIT=2):
    for _ in range(2): jit(*args)           # run, capture
  runs: list[list[tuple[str, float, float, float]]] = []    # per replay, per kernel: name, seconds, ops, bytes
  original = realize.track_stats

  def record(ctx, call, st, ets):
    for i, (_, kcall) in enumerate(realize.get_call_kernels(call)):
      if i >= len(ets) or ets[i] is None: continue
      est = realize.estimate_uop(kcall)
      runs[-1].append((realize.get_call_name(kcall, [], ctx.var_vals), ets[i], float(sym_infer(est.ops, ctx.var_vals)),
                       float(sym_infer(est.mem, ctx.var_vals))))
  walls = []
  realize.track_stats = record
  try:
    for _ in range(iters):
      runs.append([])
      t0 = time.perf_counter()
      with Context(DEBUG=2), contextlib.redirect_stdout(io.StringIO()):   # DEBUG >= 2: tinygrad waits for and times every kernel
        jit(*args)
      Device[Device.DEFAULT].synchronize()
      walls.append(time.perf_counter() - t0)
  finally:
    realize.track_stats = original
  merged: dict[str, KernelTime] = {}
  for per_kernel in zip(*runs):
    name, _, ops, mem = per_kernel[0]
    t = statistics.median(s[1] for s in per_kernel)
    if name in merged:
      k = merged[name]
      k.seconds, k.ops, k.mem_bytes, k.calls = k.seconds + t, k.ops + ops, k.mem_bytes + mem, k.calls + 1
    else: merged[name] = KernelTime(name, t, ops, mem)
  return sorted(merged.values(), key=lambda k: -k.seconds), statistics.median(walls)


def profile_table(rows: list[KernelTime], wall_s: float, top: int = 20) -> str:
  total = sum(k.seconds for k in rows) or 1e-30
  lines = [f"{len(rows)} distinct kernels, {sum(k.calls for k in rows)} launches: {total * 1e3:.3f} ms of kernel time, "
           f"{wall_s * 1e3:.3f} ms wall with a sync after each kernel",
           "| kernel | calls | ms | share | GFLOP/s | GB/s |", "|---|---:|---:|---:|---:|---:|"]
  for k in rows[:top]:
    lines.append(f"| {_plain(k.name)} | {k.calls} | {k.seconds * 1e3:.3f} | {100 * k.seconds / total:.1f} % | {k.gflops:,.0f} | {k.gbs:,.0f} |")
  rest = rows[top:]
  if rest: lines.append(f"| ({len(rest)} more) | {sum(k.calls for k in rest)} | {sum(k.seconds for k in rest) * 1e3:.3f} | "
                        f"{100 * sum(k.seconds for k in rest) / total:.1f} % | | |")
  return "\n".join(lines)


def print_profile(rows: list[KernelTime], wall_s: float, top: int = 20) -> None:
  print(profile_table(rows, wall_s, top))


def _plain(name: str) -> str:
  import re
  return re.sub(r"\x1b\[[0-9;]*m", "", name)
