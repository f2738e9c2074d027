"""The fp16 matvec fix for tinygrad 0.14.0: 16-byte vector loads, one warp per matrix row.

At batch 1 (LLM decode) every weight matrix is read once per token by a matrix-vector product y = W x, so a decode step is
as fast as its matvecs stream W from memory. tinygrad's hand-coded optimizer has a MATVEC rule for a reduce whose source
is MUL(INDEX, INDEX): it splits each row's dot product across 8 threads (GROUP), 4 rows per workgroup (LOCAL), 4 rows per
thread (UPCAST). Two things keep fp16 decode far from the memory bandwidth with it:
  - in fp16 the reduce source is CAST(float, MUL(half, half)) (the accumulator is float), and a matvec with a fused scale is
    MUL(MUL(x, s), w): neither matches, so such kernels get only GROUPTOP(16);
  - even where it fires, each thread loads one 2-byte half per row and step, and 8 threads of a row read 16 contiguous
    bytes: far too little in flight per thread to saturate DRAM.
The fix finds the matvec through CAST and MUL chains (the vector's load is indexed by the reduce range, the matrix's by
that and the row) and lays the kernel out the way a hand-written GPU matvec is laid out (vector_matvec_opts below):
  column = (step · T + thread) · V + lane      V = 16 bytes / itemsize  (8 halves, 16 int8), T = 32 threads per row
so each thread issues one 16-byte load per step and a warp reads 512 contiguous bytes of its row; the T partial sums meet
in shared memory. Measured on an H200 (fp16, in a CUDA graph, weights larger than L2): LLaMA 3.2 1B's down projection
(2048 × 8192) 226 GB/s with tinygrad's rule -> 2,926 GB/s; the 128,256 × 2048 output head (RMSNorm folded in) 2,132 -> 4,088 GB/s.
Quantized matvecs (edge-deploy/gguf_weights.py: GGUF blocks of 8-, 6- or 4-bit codes stored as uint32 words, the
dequantize written as shifts and masks and fused into the matvec) match neither rule: their matrix side is not a MUL
of loads, and the reduce is several ranges (blocks, words, and the byte/nibble axes that pick values out of a word).
tinygrad gives them 16 threads of scalar loads per row, or, for a K-quant whose row is only K/256 blocks, one thread
per row. packed_matvec_opts walks the reduce ranges in the memory order of the codes: the unpacking axes are unrolled
(one word's values in registers), the contiguous words are unrolled to one 16-byte load, and the next ranges are
split over 32 threads, so a warp reads 512 contiguous bytes of codes per step, the same load width and thread count as
the fp16 layout above.
One rule is not about matvecs: split_reduce_opts splits long sums with few outputs over 16 threads each, as tinygrad
does only up to 2,048 outputs (a training step's skinny products; its docstring has the measurements and bounds).
Large products (convolutions and their gradients) get their locals and register tile re-chosen by backend/patches/tiles.py
(TILES=0 turns that off). Every other kernel goes to tinygrad's heuristic unchanged; so do fp32 matvecs that tinygrad's
own rule already handles.
Tuning: MV_THREADS_PER_ROW (32), MV_BLOCKSIZE (rows per workgroup, 1), MV_ROWS_PER_THREAD (1), MV_LOAD_BYTES (16);
SPLIT_REDUCE (1). On LLaMA 3.2 1B's GGUF decode on the H200 the layout knobs moved tok/s by at most 10 % (threads 8-32,
1-4 rows per workgroup, 1-2 per thread; Q4_0, Q6_K, Q8_0; scripts/matvec_sweep.py): 32, 1, 1 is within 2 % of the best in each.

Worker processes: tinygrad compiles kernels (and BEAM candidates) in spawned processes (engine/worker.py) that import
tinygrad afresh and would not see this patch. `install()` therefore also replaces the pool's initializer,
`tinygrad.engine.worker._init_worker`, with `_worker_init` below. multiprocessing pickles the initializer by reference,
so every worker imports `backend.patches.matvec`, re-applies the fix and then runs tinygrad's initializer. An already-running pool
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

def _matvec_reduce(k):
  """(the reduce range that is a matrix-row · vector dot product, the matrix's INDEX) in scheduler `k`, or None.
  tinygrad's MATVEC test: the vector's load is indexed by the reduce range, and the matrix's load by every range the
  vector's is, and more (the row)."""
  from tinygrad.uop.ops import Ops, AxisType
  if not (k.ren.has_local and k.ren.has_shared and k.reduceop is not None and k.reduceop.arg[0] is Ops.ADD
          and len(k.full_shape) >= 2 and k.ranges_of(AxisType.REDUCE)): return None
  leaves = _index_leaves(k.reduceop.src[0])
  first_reduce = k.ranges_of(AxisType.REDUCE)[0]
  for a in leaves:
    for b in leaves:
      if a is b: continue
      idx0, idx1 = a.src[1].get_idx(), b.src[1].get_idx()
      if any(u is first_reduce for u in idx0.split_uop(Ops.ADD)) and all(r in idx1.ranges for r in idx0.ranges) \
         and len(idx1.ranges) > len(idx0.ranges):
        return first_reduce, b
  return None

def _split_reduce(k, rng, vec:int, threads:int):
  """A copy of `k` whose reduce range `rng` (the first reduce) is read V = `vec` elements per thread per step (UNROLL)
  by `threads` threads (GROUP):  index = (step · threads + thread) · V + lane. Fewer threads (halving) when the
  range's steps do not divide evenly; None when the range is not a multiple of V."""
  from tinygrad.codegen.opt import Opt, OptOps
  if (steps:=rng.src[0].divides(vec)) is None: return None
  while threads > 1 and steps.divides(threads) is None: threads //= 2
  k = k.copy()
  if vec > 1: k.apply_opt(Opt(OptOps.UNROLL, 0, vec))
  if threads > 1: k.apply_opt(Opt(OptOps.GROUP, 0, threads))
  return k

def vector_matvec_opts(k, threads_per_row:int, rows_per_block:int, rows_per_thread:int, load_bytes:int=16):
  """Matvec opts that read the matrix in `load_bytes`-wide vector loads, coalesced across the threads of a row:
     UNROLL  V = load_bytes / itemsize consecutive elements per thread  (one 16-byte load: 8 halves, 16 int8)
     GROUP   threads_per_row threads split each row:  column = (step · threads_per_row + thread) · V + lane
             so a warp reads threads_per_row · load_bytes contiguous bytes of the row per step
     LOCAL   rows_per_block rows in a workgroup,  UPCAST rows_per_thread rows per thread
  Any other reduction in the same kernel is unrolled by V too. Returns None if it does not apply."""
  from tinygrad.codegen.opt import Opt, OptOps, KernelOptError
  from tinygrad.uop.ops import AxisType
  if (found:=_matvec_reduce(k)) is None: return None
  dot, matrix = found
  vec = max(1, load_bytes // matrix.dtype.itemsize)
  others = [r for r in k.ranges_of(AxisType.REDUCE) if r is not dot]
  try:
    if (k:=_split_reduce(k, dot, vec, threads_per_row)) is None: return None
    for r in others:
      if vec > 1 and (n:=r.src[0].divides(vec)) is not None and n.vmax >= 1:
        k.apply_opt(Opt(OptOps.UNROLL, [k.rngs[i] for i in k.unrollable_dims].index(r), vec))
    glob = k.axes_of(AxisType.GLOBAL)[0]
    if rows_per_block > 1: k.apply_opt(Opt(OptOps.LOCAL, glob, rows_per_block))
    if rows_per_thread > 1: k.apply_opt(Opt(OptOps.UPCAST, glob, rows_per_thread))
  except (KernelOptError, ValueError): return None
  return k

def _stride(idx, rng):
  """rng's coefficient in the affine index `idx` (0: idx does not use rng), or None where rng sits inside a division
  or modulo (not a plain stride)."""
  from tinygrad.uop.ops import Ops
  stride = 0
  for term in idx.split_uop(Ops.ADD):
    if term is rng: stride += 1
    elif term.op is Ops.MUL and rng in term.src and (c:=term.src[1] if term.src[0] is rng else term.src[0]).op is Ops.CONST: stride += c.arg
    elif rng in term.backward_slice_with_self: return None
  return stride

def _packed_matrix(k):
  """The INDEX of W, the largest load indexed by a row and by the reduce, when the kernel is a matvec y = W x at
  batch 1 (it has a vector load too: one indexed by reduce ranges only) whose matrix side is any elementwise
  expression of W (a dequantize: shifts, masks, block scales) and W holds integer codes; else None."""
  from tinygrad.uop.ops import Ops, AxisType
  from tinygrad.dtype import dtypes
  if not (k.ren.has_local and k.ren.has_shared and k.reduceop is not None and k.reduceop.arg[0] is Ops.ADD and len(k.reduceops) == 1
          and k.ranges_of(AxisType.REDUCE) and k.ranges_of(AxisType.GLOBAL)): return None
  reduces, rows = set(k.ranges_of(AxisType.REDUCE)), set(k.ranges_of(AxisType.GLOBAL))
  loads = [u for u in k.reduceop.src[0].toposort() if u.op is Ops.INDEX]
  matrix = [u for u in loads if (rs:=set(u.src[1].get_idx().ranges)) & reduces and rs & rows]
  vector = [u for u in loads if (rs:=set(u.src[1].get_idx().ranges)) & reduces and not rs & rows]
  if not matrix or not vector: return None
  w = max(matrix, key=lambda u: u.src[0].buf_uop.max_numel() * u.dtype.itemsize)
  return w if dtypes.is_int(w.dtype) else None

def packed_matvec_opts(k, threads_per_row:int, rows_per_block:int, rows_per_thread:int, load_bytes:int=16, max_unroll:int=32):
  """The vector layout for a matvec whose weights are packed codes dequantized in the kernel (gguf_weights.py: uint32
  words of 8-bit, 4-bit or 6-bit codes, fp16 block scales). Such a kernel has several reduce ranges: the blocks, the
  words of a block, and the axes that pick a byte, nibble or bit pair out of a word, which the matrix load W (the
  largest one) is not indexed by. Walking the reduce ranges from the innermost, in W's memory order:
     an unpacking axis (W does not depend on it)    UNROLL fully: the values one loaded word holds, in registers
     the contiguous axes of W                       UNROLL up to V = load_bytes / itemsize (4 words: one 16-byte load),
                                                    then GROUP up to threads_per_row threads on the next ones
  so a warp reads threads_per_row · load_bytes contiguous bytes of W's row per step (a Q4_K row of K = 2048 is 1 KiB
  of codes: all of it in one step) and each thread unpacks its 16 bytes into 32 values. The walk stops at a range
  W is not contiguous along (or an unpacking axis larger than 8): the ranges left are each thread's loop. Returns None
  when the walk finds no 16-byte load or no range to split over threads (W is not read along the reduce)."""
  from tinygrad.codegen.opt import Opt, OptOps, KernelOptError
  from tinygrad.uop.ops import Ops, AxisType
  if (matrix:=_packed_matrix(k)) is None: return None
  idx, vec = matrix.src[1].get_idx(), max(1, load_bytes // matrix.dtype.itemsize)
  unroll, group, contiguous, unrolled = [], [], 1, 1     # contiguous: W's stride that the next range must have
  for r in reversed(k.ranges_of(AxisType.REDUCE)):
    if r.src[0].op is not Ops.CONST: return None
    size, stride = r.src[0].arg, _stride(idx, r)
    if stride is None: return None
    if stride == 0:
      if size > 8: break
      unroll.append((r.arg, size))
      unrolled *= size
    elif stride != contiguous: break
    else:
      take = 1
      if vec > 1:
        take = next(t for t in range(min(vec, size), 0, -1) if size % t == 0 and vec % t == 0)
        if take > 1: unroll.append((r.arg, take))
        vec, unrolled = vec // take, unrolled * take
      rest = size // take
      if vec == 1 and threads_per_row > 1 and rest > 1:
        g = next(t for t in range(min(threads_per_row, rest), 0, -1) if rest % t == 0 and threads_per_row % t == 0)
        if g > 1: group.append((r.arg, g))
        threads_per_row //= g
      contiguous = stride * size
    if (vec == 1 and threads_per_row == 1) or unrolled > max_unroll: break
  if not group or vec > 1 or unrolled > max_unroll: return None
  k = k.copy()
  def axis(dims, arg): return next(i for i, d in enumerate(dims) if k.rngs[d].arg == arg)
  try:
    for arg, n in unroll: k.apply_opt(Opt(OptOps.UNROLL, axis(k.unrollable_dims, arg), n))
    for arg, n in group: k.apply_opt(Opt(OptOps.GROUP, axis(k.axes_of(AxisType.REDUCE), arg), n))
    glob = k.axes_of(AxisType.GLOBAL)[0]
    if rows_per_block > 1: k.apply_opt(Opt(OptOps.LOCAL, glob, rows_per_block))
    if rows_per_thread > 1: k.apply_opt(Opt(OptOps.UPCAST, glob, rows_per_thread))
  except (KernelOptError, ValueError, StopIteration): return None
  return k

def vector_reduce_opts(k, threads:int=32, load_bytes:int=16):
  """A whole contiguous vector reduced to one number (the mean(x²) of an RMSNorm at batch 1): the same layout as a
  matvec row, V-wide loads (UNROLL) and `threads` threads (GROUP). tinygrad's heuristic gives such a kernel 16 threads
  walking 128 scalar loads each for d = 2048, a latency chain that a decode step pays twice per layer.
  Returns None unless the kernel has a single output, one reduce range, and every load is indexed by it directly."""
  from tinygrad.codegen.opt import KernelOptError
  from tinygrad.uop.ops import Ops, AxisType
  if not (k.ren.has_local and k.ren.has_shared and k.reduceop is not None and k.reduceop.arg[0] in (Ops.ADD, Ops.MAX)): return None
  if len(reduces:=k.ranges_of(AxisType.REDUCE)) != 1 or any(k.full_shape[i] != 1 for i in range(len(k.full_shape)) if k.rngs[i] is not reduces[0]):
    return None
  leaves = _index_leaves(k.reduceop.src[0])
  if not leaves or not all(any(u is reduces[0] for u in leaf.src[1].get_idx().split_uop(Ops.ADD)) for leaf in leaves): return None
  vec = max(1, load_bytes // min(leaf.dtype.itemsize for leaf in leaves))
  try: return _split_reduce(k, reduces[0], vec, threads)
  except KernelOptError: return None

def split_reduce_opts(k, stock, min_reduce:int=2048, max_reduce:int=8192, max_outputs:int=65536, threads:int=16):
  """A long reduction with few outputs, split over `threads` threads per output (GROUPTOP), as tinygrad's heuristic
  splits only reductions of at most 2,048 outputs. Above that it gives each thread a block of outputs and the whole
  sum as a serial loop: the (128 × 4096) @ (4096 × 32) products of an autoencoder's bottleneck (its forward and its
  input gradient) ran as 256 threads at 48 GFLOP/s, 0.9 ms each on an H200, 38 % of the step's kernel time.
  Fires for one ADD reduce of min_reduce..max_reduce numbers per output, more than 2,048 and at most max_outputs
  outputs, where tinygrad used neither tensor cores nor a split, and never for a batch-1 matvec (the layouts above
  are for those). The bounds come from whole steps on the H200, measured before patches/split.py existed (REDUCE_SPLIT=0
  is that setting; with the split on, the autoencoder's two such sums become two kernels each and this rule no longer
  fires on them) (scripts/step_bench.py without the patch, then with
  MATVEC_FIX=1 and this rule without its upper bound, SPLIT_MAX_REDUCE=0): the autoencoder's b=128 step 3.87 ->
  2.22 ms (fp32) and 3.48 -> 1.95 ms (fp16), from its two 4,096-long sums; the audio CNN's step 8.13 -> 9.29 ms from
  one 16,000-long weight gradient, where tinygrad's 3 × 3 × 4 register block per thread reused more than 16 threads
  splitting each output did, hence max_reduce (SPLIT_MAX_REDUCE, 8,192); the U-Net's kernels 115 -> 113 ms (its 10
  such kernels, 6,272 to 25,088 long). SPLIT_REDUCE=0 turns the rule off."""
  from tinygrad.codegen.opt import Opt, OptOps, KernelOptError
  from tinygrad.uop.ops import Ops, AxisType, resolve
  from tinygrad.helpers import prod
  if not (k.ren.has_local and k.ren.has_shared and k.reduceop is not None and k.reduceop.arg[0] is Ops.ADD and len(k.reduceops) == 1): return None
  if any(o.op in (OptOps.TC, OptOps.GROUP, OptOps.GROUPTOP) for o in stock.applied_opts): return None
  if _matvec_reduce(k) is not None or _packed_matrix(k) is not None: return None   # batch-1 matvecs have their own layouts
  reduce_len = prod(k.full_shape[i] for i in k.axes_of(AxisType.REDUCE))
  outputs = prod(k.output_shape[i] for i in k.upcastable_dims)
  if not (resolve(min_reduce <= reduce_len, False) and resolve(reduce_len <= max_reduce, False)
          and resolve(2048 < outputs, False) and resolve(outputs <= max_outputs, False)): return None
  for axis in range(3):
    kk = k.copy()
    try:
      kk.apply_opt(Opt(OptOps.GROUPTOP, axis, threads))
      return kk
    except KernelOptError: continue
  return None

def hand_coded_optimizations(k):
  """tinygrad's heuristic, except for matvecs its MATVEC rule misses (fp16, fused scales), which get vector_matvec_opts,
  matvecs over packed integer codes, which get packed_matvec_opts, whole-vector reductions, which get
  vector_reduce_opts, long sums with few outputs, which get split_reduce_opts, and large products (convolutions and
  their gradients), whose locals and register tile backend/patches/tiles.py re-chooses."""
  from tinygrad.codegen.opt import OptOps
  from tinygrad.uop.ops import Ops
  from tinygrad.helpers import getenv
  from backend.patches.tiles import tile_opts
  stock = _state["orig"](k)
  if getenv("SPLIT_REDUCE", 1) and (split := split_reduce_opts(k, stock, max_reduce=getenv("SPLIT_MAX_REDUCE", 8192) or 1 << 62)) is not None:
    return split
  def tiled():
    if not getenv("TILES", 1): return stock
    try: return tile_opts(k, stock) or stock
    except Exception as e:       # a model that fails must never fail the compile: tinygrad's choice stands
      if getenv("DEBUG", 0) >= 2: print(f"tiles: kept tinygrad's layout ({type(e).__name__}: {e})")
      return stock
  # tinygrad's own rule fired (plain MUL(INDEX, INDEX)) or tensor cores were used: keep its choice, or the tiles' layout
  if any(o.op is OptOps.TC for o in stock.applied_opts): return stock
  if (mul:=k.reduceop) is not None and mul.src[0].op is Ops.MUL and all(s.op is Ops.INDEX for s in mul.src[0].src): return tiled()
  if getenv("MV", 1) == 0: return tiled()
  layout = (getenv("MV_THREADS_PER_ROW", 32), getenv("MV_BLOCKSIZE", 1), getenv("MV_ROWS_PER_THREAD", 1), getenv("MV_LOAD_BYTES", 16))
  return (vector_matvec_opts(k, *layout) or packed_matvec_opts(k, *layout) or (vector_reduce_opts(k) if getenv("MV_REDUCE", 1) else None)
          or tiled())

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
