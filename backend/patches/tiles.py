"""Thread layout and register tiles for long products on GPUs, chosen by counting the memory sectors a warp touches.

A convolution's forward pass and both its gradients are sums of products: out[o...] = Σ_r a[f(o, r)] · b[g(o, r)].
tinygrad's hand-coded heuristic lays such a kernel out in three steps:
  1. UPCAST: each thread computes a 4 × 4 block of outputs in registers (two output axes, 4 each);
  2. UNROLL: short reduce axes (a 3 × 3 kernel's taps) are unrolled;
  3. LOCAL: up to 128 threads per workgroup on up to three output axes, ranked broadcast axes first, then from the
     last axis to the first; 32 threads go to axis 0 when it divides, 16, 8, 4, 3 or 2 to the others; the locals are
     then created in axis order.
The first local created becomes threadIdx.x, the axis along which the 32 lanes of a warp run, so it decides whether a
load instruction is one 128-byte transaction or 32 scattered ones. Step 3 never looks at the loads' strides: in the U-Net's
weight gradients (`3136G 32L 2L 2L 4U 4U 128R 64R 3u 3u`) the 32 lanes run along the batch axis and each lane reads a
different 32-byte sector, so the kernel reaches 3 TFLOP/s where BEAM's layout of the same kernel reaches 19.

The model. For a scheduled kernel and a candidate layout, evaluate every load's index expression with numpy at the
32 lanes of one warp and every upcast/unroll value (all the loads one thread issues per step of the reduce loop), at a
few sample points of the other ranges, and count
    cost = Σ_loads  distinct 32-byte sectors the warp touches  /  (lanes × multiply-adds per thread per step)
i.e. memory sectors per multiply-add: lanes sharing sectors (coalescing) and registers reusing loads (bigger tiles)
both lower it. The store counts once per reduction, so it is divided by the reduce length.
The search. Keep the heuristic's upcasts and unrolls; consider threadIdx.x on each output axis (32, 16 or 8 wide), alone
or with a second local axis up to 128 threads, with and without one more UPCAST (2, 3, 4, 8, or a whole axis of at most 9: the
taps), at most 64 accumulators per thread and 65,536 threads left. Take the cheapest layout if it costs less than 3/4 of
the heuristic's and its estimated program size stays under 2,000 instructions, and under 2.5x the heuristic's where loads are masked
(big masked tiles, the 2 × 2 upsample windows of a U-Net's gradients, grow past 3,000 and compile for tens of seconds).
Where it applies: GPU kernels of sums (ADD reductions) where the heuristic used locals and neither tensor cores nor a
GROUP split, and that have at least TILES_MIN (2^26) multiply-adds: smaller kernels are not worth the model's time
(0.04-0.4 s per kernel on one core of the 2-core development machine). It is part of the matvec patch
(backend/patches/matvec.py): on by default on a Jetson, with MATVEC_FIX=1 elsewhere. TILES=0 turns the rule off.
What the model leaves out: occupancy (a layout of 8 or 16 threads can win a tie), and loads outside the sum (a fused
bias), which it charges once per step of the sum as if they were inside it.

Measured on an H200, fp32, no BEAM, each figure beside PyTorch 2.11 eager (TF32 off) in its own call (docs/results.md
has the table): `MATVEC_FIX=1 DEV=CUDA python3 scripts/step_bench.py --steps vgg,unet` gave VGG-19's 512 px Adam step
28.1 ms (PyTorch 25.1) and the U-Net DDPM step 58.9 ms (PyTorch 22.3); the plain command, without the patch, in the call
before it: 40.5 ms (25.0) and 75.1 ms (24.7). The autoencoder's and the audio CNN's steps are unchanged (2.13 and
6.82 ms with it, 2.09 and 6.83 without). Which kernels of a step it
changes, rendered for sm_87 with no GPU: `python3 scripts/heuristic_diff.py --step unet --env TILES` (62 of 1,248).
"""
import numpy as np
from tinygrad.codegen.opt import Opt, OptOps, KernelOptError
from tinygrad.uop.ops import Ops, AxisType
from tinygrad.helpers import prod, getenv

TILES_MIN = 1 << 26

def _eval(u, env:dict, memo:dict):
  """The integer (or bool) value of index expression `u` with numpy arrays for its ranges (env: RANGE -> array)."""
  if u in memo: return memo[u]
  op = u.op
  if op is Ops.RANGE: v = env[u]
  elif op is Ops.CONST: v = u.arg
  else:
    s = [_eval(x, env, memo) for x in u.src]
    if op is Ops.ADD: v = s[0] + s[1]
    elif op is Ops.SUB: v = s[0] - s[1]
    elif op is Ops.MUL: v = s[0] * s[1]
    elif op is Ops.CDIV: v = np.sign(s[0]) * np.sign(s[1]) * (np.abs(s[0]) // np.abs(s[1]))
    elif op is Ops.CMOD: v = np.sign(s[0]) * (np.abs(s[0]) % np.abs(s[1]))
    elif op is Ops.FLOORDIV: v = np.floor_divide(s[0], s[1])
    elif op is Ops.FLOORMOD: v = np.mod(s[0], s[1])
    elif op is Ops.CMPLT: v = s[0] < s[1]
    elif op is Ops.CMPNE: v = s[0] != s[1]
    elif op is Ops.CMPEQ: v = s[0] == s[1]
    elif op is Ops.AND: v = s[0] & s[1]
    elif op is Ops.OR: v = s[0] | s[1]
    elif op is Ops.XOR: v = s[0] ^ s[1]
    elif op is Ops.MAX: v = np.maximum(s[0], s[1])
    elif op is Ops.NEG: v = -s[0]
    elif op is Ops.SHL: v = s[0] << s[1]
    elif op is Ops.SHR: v = s[0] >> s[1]
    elif op is Ops.WHERE: v = np.where(s[0], s[1], s[2])
    elif op is Ops.CAST: v = s[0]
    else: raise ValueError(f"cannot evaluate {op} in an index")
  memo[u] = v
  return v

def _upcast_values(k):
  """(number of upcast/unroll combinations, env for those ranges), the last axis fastest."""
  ups = k.axes_of(AxisType.UPCAST, AxisType.UNROLL)
  n = prod(int(k.full_shape[i]) for i in ups) if ups else 1
  combo, env, div = np.arange(n), {}, 1
  for i in reversed(ups):
    env[k.rngs[i]] = (combo // div) % int(k.full_shape[i])
    div *= int(k.full_shape[i])
  return n, env

def sector_cost(k, layouts:list, samples:int=2, seed:int=0):
  """Memory sectors per multiply-add (module docstring) of scheduler `k`, which has no locals yet, for each layout in
  `layouts` = [[(axis, width), ...], ...] (the first pair is threadIdx.x). -> numpy array, or None when an index
  cannot be evaluated."""
  n_upcast, up_env = _upcast_values(k)
  n_layouts, n_samples, lanes = len(layouts), samples, 32
  lane = np.arange(lanes).reshape(1, 1, lanes, 1)
  active = np.array([min(lanes, prod(w for _, w in c)) for c in layouts])
  env = {r: v.reshape(1, 1, 1, n_upcast) for r, v in up_env.items()}
  rng = np.random.default_rng(seed)
  for i, r in enumerate(k.rngs):
    if r in env: continue
    width, coord = np.ones((n_layouts, 1, 1, 1), dtype=np.int64), np.zeros((n_layouts, 1, lanes, 1), dtype=np.int64)
    for li, layout in enumerate(layouts):
      div = 1
      for a, w in layout:
        if a == i: width[li], coord[li] = w, (lane[0] // div) % w
        div *= w
    outer = rng.integers(0, 1 << 30, (1, n_samples, 1, 1)) % (int(k.full_shape[i]) // width)
    outer[:, 0] = 0
    env[r] = outer * width + coord
  stores = {u.src[0] for u in k.ast.backward_slice if u.op is Ops.STORE}
  reduce_len = prod(int(k.full_shape[i]) for i in k.axes_of(AxisType.REDUCE)) or 1
  live = lane < active.reshape(n_layouts, 1, 1, 1)
  total = np.zeros(n_layouts)
  for b in k.bufs:
    idx, valid = b.src[1].get_idx(), b.src[1].get_valid()
    for r in set(idx.ranges) | set(valid.ranges): env.setdefault(r, 0)
    memo: dict = {}
    try:
      addr = np.broadcast_to(np.asarray(_eval(idx, env, memo), dtype=np.int64), (n_layouts, n_samples, lanes, n_upcast))
      ok = np.broadcast_to(np.asarray(_eval(valid, env, memo), dtype=bool), (n_layouts, n_samples, lanes, n_upcast)) & live
    except (ValueError, KeyError, TypeError): return None
    sec = np.sort(np.where(ok, addr * b.dtype.itemsize // 32, -1).reshape(n_layouts, n_samples, lanes * n_upcast), axis=-1)
    distinct = ((sec[..., 1:] != sec[..., :-1]) & (sec[..., 1:] >= 0)).sum(-1) + (sec[..., 0] >= 0)
    per_thread = distinct.mean(1) / active
    total += per_thread / reduce_len if b in stores else per_thread
  return total / n_upcast

def program_size(k) -> float:
  """A cheap estimate of the kernel's instruction count: 3 per multiply-add a thread does per step, 2.5 per distinct
  load and 8 more per masked one, fitted by hand to the uop counts (full_rewrite_to_sink) of 18 layouts of the U-Net's
  and VGG-19's largest kernels. It is rough: masked kernels come out up to 2.35x under their count, unmasked ones up to
  1.3x over, hence the rule's second bound for masked kernels (2.5x the heuristic's own estimate)."""
  n_upcast, env = _upcast_values(k)
  for r in k.rngs: env.setdefault(r, 1)
  stores = {u.src[0] for u in k.ast.backward_slice if u.op is Ops.STORE}
  size = 3.0 * n_upcast
  for b in k.bufs:
    if b in stores: continue
    idx, valid = b.src[1].get_idx(), b.src[1].get_valid()
    for r in set(idx.ranges) | set(valid.ranges): env.setdefault(r, 0)
    try: n = len(np.unique(np.broadcast_to(np.asarray(_eval(idx, env, {})), (n_upcast,))))
    except (ValueError, KeyError, TypeError): return float("inf")
    size += n * (2.5 + (8 if valid.op is not Ops.CONST else 0))
  return size

def _masked(k) -> bool:
  """Whether any load is masked (padding, or the windows of a strided or upsampled convolution's gradient)."""
  stores = {u.src[0] for u in k.ast.backward_slice if u.op is Ops.STORE}
  return any(b.src[1].get_valid().op is not Ops.CONST for b in k.bufs if b not in stores)

def _local_layouts(k, max_threads:int=128) -> list:
  """Candidate locals, [(axis, width), ...] with threadIdx.x first: each output axis 32, 16 or 8 wide, alone or with the
  widest of 16, 8, 4, 2 on one other axis that keeps the workgroup within max_threads."""
  axes = [i for i in k.axes_of(AxisType.GLOBAL) if int(k.full_shape[i]) > 1]
  out = []
  for a in axes:
    for w in (32, 16, 8):
      if int(k.full_shape[a]) % w: continue
      out.append([(a, w)])
      for b in axes:
        if b == a: continue
        w2 = next((x for x in (16, 8, 4, 2) if w * x <= max_threads and int(k.full_shape[b]) % x == 0), None)
        if w2 is not None: out.append([(a, w), (b, w2)])
  return out

def _apply_locals(k, layout:list):
  """A copy of `k` with LOCAL opts for `layout` ((axis of k, width) pairs), applied in order: the first is threadIdx.x."""
  ids = [(k.rngs[a].arg[:-1], w) for a, w in layout]
  k = k.copy()
  for rid, w in ids:
    k.apply_opt(Opt(OptOps.LOCAL, next(i for i, r in enumerate(k.rngs) if r.arg[:-1] == rid), w))
  return k

def tile_opts(k, stock, gain:float=0.75, max_acc:int=64, min_threads:int=65536, max_size:float=2000.0, min_macs:int|None=None):
  """A copy of scheduler `k` laid out by the sector model (module docstring), or None to keep `stock`, the heuristic's."""
  if not (k.ren.has_local and k.reduceop is not None and all(r.arg[0] is Ops.ADD for r in k.reduceops)): return None
  if not all(isinstance(s, int) for s in k.full_shape): return None
  try: floor = min_macs if min_macs is not None else int(getenv("TILES_MIN", TILES_MIN))
  except ValueError: floor = TILES_MIN
  if prod(k.full_shape) < floor: return None
  ops = [o.op for o in stock.applied_opts]
  if OptOps.LOCAL not in ops or any(op in (OptOps.TC, OptOps.GROUP, OptOps.GROUPTOP, OptOps.THREAD, OptOps.NOLOCALS, OptOps.PADTO,
                                          OptOps.SWAP) for op in ops): return None
  first = ops.index(OptOps.LOCAL)
  if any(op is not OptOps.LOCAL for op in ops[first:]): return None     # the heuristic's locals come last
  try:
    base = k.copy()
    for o in stock.applied_opts[:first]: base.apply_opt(o)
    probe, stock_layout = base.copy(), []
    for o in stock.applied_opts[first:]:
      rid = probe.rngs[o.axis].arg[:-1]
      stock_layout.append((next(i for i, r in enumerate(base.rngs) if r.arg[:-1] == rid), o.arg))
      probe.apply_opt(o)
    stock_cost = sector_cost(base, [stock_layout])
    if stock_cost is None: return None
    bases = [base]
    acc = prod(int(base.full_shape[i]) for i in base.axes_of(AxisType.UPCAST))
    threads = prod(int(base.full_shape[i]) for i in base.axes_of(AxisType.GLOBAL))
    for a in base.axes_of(AxisType.GLOBAL):
      n = int(base.full_shape[a])
      for amt in sorted({2, 3, 4, 8} | ({n} if n <= 9 else set())):
        if n % amt or n == 1 or acc * amt > max_acc or threads // amt < min_threads: continue
        b = base.copy()
        b.apply_opt(Opt(OptOps.UPCAST, a, 0 if amt == n else amt))
        bases.append(b)
    best, best_cost = None, gain * float(stock_cost[0])
    stock_size, masked = program_size(base), _masked(base)
    for b in bases:     # the heuristic's own tile is always allowed; a bigger one within max_size (and 2.5x if masked)
      if b is not base and program_size(b) > (min(max_size, 2.5 * stock_size) if masked else max_size): continue
      layouts = _local_layouts(b)
      if not layouts or (costs := sector_cost(b, layouts)) is None: continue
      i = int(np.argmin(costs))
      if costs[i] < best_cost: best, best_cost = (b, layouts[i]), float(costs[i])
    return None if best is None else _apply_locals(*best)
  except (KernelOptError, StopIteration, ValueError, ZeroDivisionError):
    return None
