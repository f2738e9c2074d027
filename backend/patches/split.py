"""Split long contractions into two kernels earlier than tinygrad 0.14.0 does: the weight gradients of a training step.

A weight gradient is a sum over the batch and the pixels for each of few outputs:
  ∂L/∂w[o, c, dy, dx] = Σ_{b, i, j} ∂L/∂y[b, o, i, j] · x[b, c, i + dy, j + dx]     (O·C·9 outputs, B·H·W terms each)
tinygrad's scheduler splits such a sum into two kernels (partial sums over pieces of the batch, then a sum of the
pieces: the split-K of a matrix product) only when each output sums at least 32,768 terms (REDUCEOP_SPLIT_THRESHOLD).
Below that the whole sum is one kernel: a DDPM U-Net's 3×3 layers at 14×14 with a batch of 128 (25,088 terms) ran
as 1,024-2,048 threads, each looping over all 25,088 terms, at a few hundred GFLOP/s; at 28×28 (100,352 terms) the same
layer is split and fast. This patch lowers the threshold to REDUCE_SPLIT_MIN terms (4,096) for sums with at least
two output axes. Sums with one output axis keep tinygrad's rule: a batch-1 matrix-vector product (LLM decode,
y[n] = Σ_k W[n, k] x[k]) has one, and its kernels have their own layouts (patches/matvec.py); so do per-channel sums.
CPU devices keep tinygrad's rule too: a CPU has no idle threads for the second kernel to fill.

Measured on an H200 (`DEV=CUDA`, fp32, no BEAM, the U-Net DDPM step at batch 128 timed as
scripts/profile_step.py --step unet --time 30 times it, one call, one process per setting): 107.1 ms with
tinygrad's threshold (REDUCE_SPLIT=0), 75.1 ms with this patch; lowering the threshold for every sum instead
(REDUCEOP_SPLIT_THRESHOLD) gave 84.0 ms at 16,384 and 73.3 ms at 4,096, an earlier call.
scripts/step_bench.py's U-Net step with the patch: 75.2 ms. The autoencoder's step 3.77 -> 2.07 ms, the audio CNN's
8.07 -> 7.05 ms (docs/results.md has the commands). On an Orin
the same kernels are as short of threads, so the direction should hold; the factor is not measured there.

How it hooks in: tinygrad's scheduler calls `tinygrad.schedule.rangeify.split_reduceop` from a pattern matcher that
copies the function when it first matches. `install()` (before anything is scheduled) replaces that function's code
with a call to `split_reduceop` below, which calls tinygrad's own split with the lower threshold, so the split itself
(which axis, how many pieces) is tinygrad's. REDUCE_SPLIT=0 turns it off; REDUCE_SPLIT_MIN sets the threshold. (Not
to be confused with SPLIT_REDUCE, the matvec patch's split over threads, or tinygrad's SPLIT_REDUCEOP, its own split.)
On a Jetson the start-up hook installs it when tinygrad's scheduler module is first imported. With tinygrad's
UPAT_COMPILE=0 (a debugging mode) the matcher copies the function at import and the patch has no effect.

What else it splits: any sum with two or more output axes in that range, not only weight gradients. A prefill's
matrix products with K >= 4,096 (edge-deploy/llm.py's down projection over T tokens, T > 1) and inference layers whose
sum is long against their outputs (a 512 -> 512 3x3 conv at 7x7, batch 1; VGG-16's classifier at batch 32) become two
kernels as well; the model zoo's kernels per inference grow by 3-5 (ResNet-18 fp32 b=1 59 -> 62, VGG-16 fp32 b=1
31 -> 36). Their speed with and without the split is not measured. Batch-1 decode is unchanged.
"""
import os, types

STOCK_THRESHOLD = 32768
STOCK_DEVICES = ("CPU", "CLANG", "LLVM", "PYTHON")   # devices that keep tinygrad's rule
_state: dict = {"orig": None, "enabled": False}


def _hook(reduce, x):
  return _orin_split_reduceop(reduce, x)  # noqa: F821  (looked up in tinygrad's rangeify module, where install() puts it)


def threshold() -> int:
  return int(os.environ.get("REDUCE_SPLIT_MIN", "4096"))


def wants_split(reduce_shape: tuple, input_shape: tuple, device, op=None) -> bool:
  """Whether this patch, and not tinygrad's own rule, should try to split a sum of `input_shape` to `reduce_shape`."""
  from tinygrad.helpers import prod, all_int
  from tinygrad.uop.ops import Ops
  if not _state["enabled"] or os.environ.get("REDUCE_SPLIT", "1") == "0": return False
  if (op is not None and op is not Ops.ADD) or not all_int(input_shape) or not all_int(reduce_shape): return False
  dev = (device[0] if isinstance(device, tuple) else device) or ""
  if dev.split(":")[0] in STOCK_DEVICES: return False
  outputs = prod(reduce_shape)
  if outputs == 0 or sum(1 for s in reduce_shape if s > 1) < 2: return False
  return threshold() <= prod(input_shape) // outputs < STOCK_THRESHOLD


def split_reduceop(reduce, x):
  orig = _state["orig"]
  if not wants_split(reduce.shape, x.shape, x.device, reduce.arg[0]): return orig(reduce, x)
  g = orig.__globals__
  stock_getenv = g["getenv"]
  g["getenv"] = lambda key, default=0: threshold() if key == "REDUCEOP_SPLIT_THRESHOLD" else stock_getenv(key, default)
  try: return orig(reduce, x)
  finally: g["getenv"] = stock_getenv


def _already_compiled(rangeify) -> bool:
  """Whether the scheduler's pattern matcher has already compiled its copy of split_reduceop (a schedule ran)."""
  from tinygrad.uop.ops import Ops
  pm = rangeify.pm_mops + rangeify.earliest_rewrites        # the matcher the scheduler uses (PatternMatcher.__add__ is cached)
  pats = {id(p) for p, fxn in pm.patterns if fxn is rangeify.split_reduceop}
  return any(entry[1].__name__ != "lazy_compile" for entry in pm.pdict.get(Ops.REDUCE, []) if id(entry[0]) in pats)


def install() -> None:
  """Idempotent. Must run before the first schedule: the pattern matcher keeps the function it first compiled, so a
  late call raises (with one line) instead of reporting a patch that is not in effect."""
  from tinygrad.schedule import rangeify
  if _state["orig"] is None:
    if _already_compiled(rangeify):
      raise RuntimeError("the reduce split must be installed before tinygrad schedules anything (import common first)")
    f = rangeify.split_reduceop
    _state["orig"] = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__)
    rangeify._orin_split_reduceop = split_reduceop
    f.__code__ = _hook.__code__
  _state["enabled"] = True


def uninstall() -> None:
  """Back to tinygrad's rule (the hook stays in place and passes every sum to tinygrad's own split)."""
  _state["enabled"] = False


def is_installed() -> bool: return _state["enabled"]
