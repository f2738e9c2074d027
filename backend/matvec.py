"""The fp16 matvec heuristic fix for tinygrad 0.14.0.

tinygrad's hand-coded optimizer has a MATVEC rule: for a reduce whose source is MUL(INDEX, INDEX) -- a dot product of a
matrix row with a vector -- it splits the reduction across MV_THREADS_PER_ROW threads (GROUP), puts MV_BLOCKSIZE rows in
a workgroup (LOCAL) and gives each thread MV_ROWS_PER_THREAD rows (UPCAST). In fp16 the reduce source is
CAST(float, MUL(half, half)) (the accumulator is float), and a fused RMS-norm matvec is MUL(MUL(x, n), w): neither matches,
so the kernel only gets GROUPTOP(16) and reads the matrix far below memory bandwidth.

The fix looks through CAST and MUL chains for the two INDEX loads, checks the same conditions tinygrad checks, and applies
the same three opts. Every other kernel goes to tinygrad's heuristic unchanged.

Worker processes: tinygrad compiles kernels (and BEAM candidates) in spawned processes (engine/worker.py) that import
tinygrad afresh and would not see this patch. `install()` therefore also replaces the pool's initializer,
`tinygrad.engine.worker._init_worker`, with `_worker_init` below. multiprocessing pickles the initializer by reference,
so every worker imports `backend.matvec`, re-applies the fix and then runs tinygrad's initializer. An already-running pool
is terminated so the next one starts with the new initializer. `MATVEC_FIX=1` is also exported so that processes started
later through common/ enable it too.
"""
import os

_state = {"orig": None, "orig_worker_init": None}

def _unwrap(u):
  from tinygrad.uop.ops import Ops
  while u.op is Ops.CAST: u = u.src[0]
  return u

def _index_leaves(u) -> list:
  """The INDEX nodes reachable from a reduce source through MUL and CAST only (loads the product is made of)."""
  from tinygrad.uop.ops import Ops
  u = _unwrap(u)
  if u.op is Ops.INDEX: return [u]
  if u.op is Ops.MUL: return _index_leaves(u.src[0]) + _index_leaves(u.src[1])
  return []

def matvec_opts(k):
  """Apply tinygrad's MATVEC opts to scheduler `k` if its reduce is a (CAST/MUL-wrapped) matrix-vector product.
  Returns the optimized copy, or None when the kernel is not such a matvec."""
  from tinygrad.codegen.opt import Opt, OptOps, KernelOptError
  from tinygrad.uop.ops import Ops, AxisType
  from tinygrad.helpers import getenv
  MV_BLOCKSIZE, MV_THREADS_PER_ROW, MV_ROWS_PER_THREAD = getenv("MV_BLOCKSIZE", 4), getenv("MV_THREADS_PER_ROW", 8), getenv("MV_ROWS_PER_THREAD", 4)
  if not (k.ren.has_local and k.ren.has_shared and getenv("MV", 1) != 0 and k.reduceop is not None and k.reduceop.arg[0] is Ops.ADD
          and len(k.full_shape) >= 2 and k.ranges_of(AxisType.REDUCE)): return None
  leaves = _index_leaves(k.reduceop.src[0])
  if len(leaves) < 2: return None
  first_reduce = k.ranges_of(AxisType.REDUCE)[0]
  for a in leaves:
    for b in leaves:
      if a is b: continue
      idx0, idx1 = a.src[1].get_idx(), b.src[1].get_idx()
      if not (any(u is first_reduce for u in idx0.split_uop(Ops.ADD)) and all(r in idx1.ranges for r in idx0.ranges)): continue
      for global_idx in k.axes_of(AxisType.GLOBAL):
        if first_reduce.src[0].divides(MV_THREADS_PER_ROW) is None or k.full_shape[global_idx] % (MV_BLOCKSIZE * MV_ROWS_PER_THREAD) != 0: continue
        k = k.copy()
        try:
          if MV_THREADS_PER_ROW > 1: k.apply_opt(Opt(OptOps.GROUP, 0, MV_THREADS_PER_ROW))
        except KernelOptError: pass
        if MV_BLOCKSIZE > 1: k.apply_opt(Opt(OptOps.LOCAL, global_idx, MV_BLOCKSIZE))
        if MV_ROWS_PER_THREAD > 1: k.apply_opt(Opt(OptOps.UPCAST, global_idx, MV_ROWS_PER_THREAD))
        return k
  return None

def hand_coded_optimizations(k):
  """tinygrad's heuristic, with the MATVEC rule extended to CAST/MUL-wrapped products."""
  from tinygrad.codegen.opt import OptOps
  from tinygrad.uop.ops import Ops
  stock = _state["orig"](k)
  # tinygrad's own rule fired (plain MUL(INDEX, INDEX)) or tensor cores were used: keep its choice
  if any(o.op is OptOps.TC for o in stock.applied_opts): return stock
  if (mul:=k.reduceop) is not None and mul.src[0].op is Ops.MUL and all(s.op is Ops.INDEX for s in mul.src[0].src): return stock
  return matvec_opts(k) or stock

def _worker_init():
  """Runs first in every spawned worker: a fresh interpreter, where tinygrad's own initializer is still in place."""
  from tinygrad.engine import worker
  install(_in_worker=True)
  worker._init_worker()

def install(_in_worker:bool=False) -> None:
  """Idempotent. Patches the heuristic in this process and arranges for compile/BEAM workers to patch themselves."""
  from tinygrad.codegen.opt import heuristic
  from tinygrad.engine import worker
  if _state["orig"] is None:
    _state["orig"], heuristic.hand_coded_optimizations = heuristic.hand_coded_optimizations, hand_coded_optimizations
    from tinygrad.codegen import to_program_cache
    to_program_cache.clear()   # programs compiled without the fix would otherwise be reused
  if not _in_worker and _state["orig_worker_init"] is None:
    _state["orig_worker_init"], worker._init_worker = worker._init_worker, _worker_init
    worker.terminate_worker_pool()
    os.environ["MATVEC_FIX"] = "1"

def uninstall() -> None:
  """Undo install() (for A/B comparisons in one process; the benchmark uses fresh processes instead)."""
  from tinygrad.codegen.opt import heuristic
  from tinygrad.engine import worker
  from tinygrad.codegen import to_program_cache
  if _state["orig"] is not None: heuristic.hand_coded_optimizations, _state["orig"] = _state["orig"], None
  if _state["orig_worker_init"] is not None:
    worker._init_worker, _state["orig_worker_init"] = _state["orig_worker_init"], None
    worker.terminate_worker_pool()
  to_program_cache.clear()
  os.environ.pop("MATVEC_FIX", None)

def is_installed() -> bool: return _state["orig"] is not None

def applied_opts(ast, renderer) -> tuple:
  """The optimizations tinygrad's scheduler picks for kernel `ast` on `renderer`, without compiling it (for tests and
  for checking that the fix fires: no GPU or CUDA toolkit needed)."""
  import tinygrad.codegen as cg
  seen, orig = [], cg.apply_opts
  def recording(sink, ren, beam=0):
    seen.append(out:=orig(sink, ren, beam=beam))
    return out
  cg.apply_opts = recording
  try: cg.full_rewrite_to_sink(ast, renderer)
  finally: cg.apply_opts = orig
  return tuple(seen[0].arg.applied_opts) if seen and seen[0].arg is not None else ()
