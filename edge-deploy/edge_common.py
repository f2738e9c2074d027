"""What the edge-deploy levers share, written once: the int8 weight format (quantize.py's CNN and llm.py's
decoder both store weights this way), the digit CNN and its training loop (quantize.py trains and
distils it, memory_plan.py measures it), kernel counting, the copy-bandwidth kernel that llm.py measures
the decode against, and the checks and flags the scripts share.

Not a script. Each lever (`python3 edge-deploy/<lever>.py`) imports it from beside itself.

int8 weight-only quantization, per output channel o (row o of W):
    s_o = max_i |W_oi| / 127,    q_oi = round(W_oi / s_o) ∈ [-127, 127] stored as int8
    W ≈ q · s,   |W_oi − q_oi·s_o| ≤ s_o / 2   (one part in 254 of the row's largest weight)
The layer computes x @ (q · s)ᵀ; the dequantize is lazy, so tinygrad fuses it into the matmul's kernel and
no floating-point copy of W is ever written.
"""
from __future__ import annotations
import os
from dataclasses import dataclass

import common                      # first: turns NV=1 / CUDA=1 into DEV=... before tinygrad reads it
import numpy as np
from tinygrad import Tensor, TinyJit, Device, GlobalCounters, Context, UOp, dtypes, nn
from common import UserError
from common.cli import int_range  # noqa: F401  (the levers' integer flags: ec.int_range)
from common.conv import Conv2d, conv   # the shared convolution (im2col where it trains faster)
from common.train import on_cpu, realize_init

PROJECT = "edge-deploy"
HERE = os.path.dirname(os.path.abspath(__file__))


# ---- int8 weights -----------------------------------------------------------------------------

@dataclass
class Int8Weight:
  """A weight stored as int8 codes with one scale per output channel (axis 0 of the weight)."""
  q: Tensor        # int8, the weight's shape (out, ...)
  scale: Tensor    # (out,), in the compute dtype

  def dequantize(self) -> Tensor:
    """q · s, lazily: used inside a matmul/conv, tinygrad fuses it into that kernel."""
    return self.q.cast(self.scale.dtype) * self.scale.reshape(-1, *[1] * (self.q.ndim - 1))

  def nbytes(self) -> int: return self.q.nbytes() + self.scale.nbytes()


def quantize_int8(w: Tensor, dtype=dtypes.half) -> Int8Weight:
  """Symmetric per-output-channel quantization: s_o = max_i |W_oi| / 127, q_oi = round(W_oi / s_o)."""
  w = w.float()
  amax = w.abs().reshape(w.shape[0], -1).max(axis=1)                 # (out,)
  scale = (amax / 127).maximum(1e-12)                                 # an all-zero row keeps a finite scale
  q = (w / scale.reshape(-1, *[1] * (w.ndim - 1))).round().clip(-127, 127).cast(dtypes.int8)
  return Int8Weight(q.realize(), scale.cast(dtype).realize())


def as_weight(w: Tensor | Int8Weight) -> Tensor: return w.dequantize() if isinstance(w, Int8Weight) else w
def linear(x: Tensor, w) -> Tensor: return x @ as_weight(w).T      # W (out, in); int8 dequantized inside the matmul


# ---- the digit CNN: conv 1->w 3x3, pool, conv w->2w 3x3, pool, linear 2w·5·5 -> 10 -------------

def cnn_init(width: int) -> dict[str, Tensor]:
  """Digit CNN weights (PyTorch's default init), lazy until realized."""
  layers = {"conv1": Conv2d(1, width, 3), "conv2": Conv2d(width, 2 * width, 3), "fc": nn.Linear(2 * width * 25, 10)}
  return {f"{name}.{p}": getattr(layer, p) for name, layer in layers.items() for p in ("weight", "bias")}


def cnn_param_count(width: int) -> int: return (9 * width + width) + (9 * width * 2 * width + 2 * width) + (2 * width * 25 * 10 + 10)


def cnn_forward(w: dict, x: Tensor) -> Tensor:
  """x (B, 1, 28, 28) -> logits (B, 10), in whatever dtype x and the weights have."""
  x = conv(x, as_weight(w["conv1.weight"]), w["conv1.bias"]).relu().max_pool2d(2)   # (B, w, 13, 13)
  x = conv(x, as_weight(w["conv2.weight"]), w["conv2.bias"]).relu().max_pool2d(2)   # (B, 2w, 5, 5)
  return x.flatten(1).linear(as_weight(w["fc.weight"]).T, w["fc.bias"])              # (B, 10)


def to_precision(w: dict[str, Tensor], precision: str) -> dict:
  """fp32 | fp16 (every tensor half) | int8 (weights int8 + fp16 scales, biases fp16, activations fp16)."""
  if precision == "fp32": return {k: v.float().realize() for k, v in w.items()}
  if precision == "fp16": return {k: v.half().realize() for k, v in w.items()}
  return {k: quantize_int8(v) if k.endswith("weight") else v.half().realize() for k, v in w.items()}


def act_dtype(precision: str): return dtypes.float32 if precision == "fp32" else dtypes.half
def weight_nbytes(w: dict) -> int: return sum(v.nbytes() for v in w.values())
def n_params(w: dict) -> int: return sum(v.numel() for v in w.values())


def train_classifier(forward, w: dict[str, Tensor], X: Tensor, Y: Tensor, steps: int, batch: int, lr: float, seed: int,
                     desc: str, loss_fn=None, stats: dict | None = None) -> list[float]:
  """Adam on random minibatches (drawn with replacement) of the device-resident (X, Y). loss_fn(logits, idx)
  replaces plain cross-entropy (distillation uses it). The whole step is one TinyJit: from the 3rd call it
  replays. `stats` receives the device bytes in use after the last step, while optimizer and JIT are alive."""
  opt = nn.optim.Adam(list(w.values()), lr=lr)
  loss_fn = loss_fn or (lambda logits, idx: logits.sparse_categorical_crossentropy(Y[idx]))
  realize_init(list(w.values()), opt)

  @TinyJit
  def step(idx: Tensor) -> Tensor:
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = loss_fn(forward(w, X[idx]), idx)
      loss.backward()
      return loss.realize(*opt.schedule_step())

  rng, losses = np.random.default_rng(seed), []
  for i in (bar := common.progress(range(steps), desc=desc)):
    losses.append(step(Tensor(rng.integers(0, X.shape[0], batch, dtype=np.int32))).item())
    if i % 20 == 0: bar.set_description(f"{desc} loss {losses[-1]:.3f}")
  if stats is not None: stats["mem_used"] = GlobalCounters.mem_used
  return losses


def accuracy(forward, w: dict, X: Tensor, Y: np.ndarray, dtype, batch: int = 500) -> float:
  hits = sum(int((forward(w, X[i:i + batch].cast(dtype)).argmax(1).numpy() == Y[i:i + batch]).sum()) for i in range(0, len(Y), batch))
  return hits / len(Y)


def load_digits(n_train: int, n_test: int, seed: int) -> tuple[Tensor, Tensor, Tensor, np.ndarray, np.ndarray]:
  """Synthetic digits (common.digits) on the device: (X_train, Y_train, X_test, y_train numpy, y_test numpy)."""
  from common.digits import digit_splits
  x_tr, y_tr, x_te, y_te = digit_splits(n_train, n_test, seed=seed, size=28)
  return Tensor(x_tr).realize(), Tensor(y_tr.astype(np.int32)).realize(), Tensor(x_te).realize(), y_tr, y_te


# ---- measuring ----------------------------------------------------------------------------------

def count_kernels(fn) -> tuple[int, int]:
  """(kernels run, bytes they move by tinygrad's estimate) for realizing fn()."""
  GlobalCounters.reset()
  fn().realize()
  return GlobalCounters.kernel_count, GlobalCounters.global_mem


def stream_add_one(x: Tensor) -> Tensor:
  """y = x + 1, the copy-bandwidth kernel. On a GPU its layout is given explicitly, as a bandwidth test's should be:
  4 floats (one 16-byte load) per thread, 128 threads per block. tinygrad's heuristic picks narrower loads for it, and
  the decode's fraction of "copy bandwidth" would be flattered by a slow copy (H200: 1.65 TB/s heuristic, 3.8 explicit).
  Elsewhere (CPU) tinygrad's own choice, which spreads the loop over the cores."""
  if not Device[Device.DEFAULT].renderer.has_local: return x + 1
  from tinygrad.codegen.opt import Opt, OptOps
  from tinygrad.uop.ops import KernelInfo
  def kernel(y: UOp, src: UOp) -> UOp:
    i = UOp.range(src.shape[0], 0)
    opts = (Opt(OptOps.UPCAST, 0, 4), Opt(OptOps.LOCAL, 0, 128))
    return y[i].store(src[i] + 1).end(i).sink(arg=KernelInfo(name="stream_add_one", opts_to_apply=opts))
  return Tensor.empty_like(x).custom_kernel(x, fxn=kernel)[0]


def measure_copy_bandwidth(bench, mib: int) -> float:
  """STREAM-style 'y = x + 1' over a float32 buffer much larger than any cache: GB/s of read + write."""
  n = mib * 2**20 // 4
  x = Tensor.ones(n).contiguous().realize()
  stream = TinyJit(lambda x: stream_add_one(x).realize())
  return bench.run(f"stream y=x+1 {mib} MiB", lambda: stream(x), rate=(2 * n * 4 / 1e9, "GB/s"), iters=20, max_seconds=3.0)["value"]


def timing(quick: bool) -> dict:
  """Steady-state samples per timed case (Bench.run keywords)."""
  return {"iters": 5, "max_seconds": 0.3} if quick else {"iters": 10, "max_seconds": 2.0}


# --- plumbing shared by the scripts ------------------------------------------------------------

def available_memory() -> int | None:
  """Bytes the host can still give (MemAvailable), or None where that cannot be read."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"): return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError): pass
  return None


def check_fits(nbytes: float, what: str, parser=None) -> None:
  """One line before the work (the parser's error, or a UserError) when `what` needs more than the host has free.
  Checked on CPU devices and on a Jetson, whose GPU shares the host's memory; elsewhere an out-of-memory error is
  still one line (common.run_main)."""
  free = available_memory()
  shared = on_cpu() or os.path.exists("/dev/nvmap")
  if shared and free is not None and nbytes > free:
    msg = f"{what} needs about {nbytes / 1e9:.3g} GB, and {free / 1e9:.3g} GB of memory is available"
    if parser is not None: parser.error(msg)
    raise UserError(msg)


def add_flag(group, *names: str, **kwargs) -> None:
  """argparse add_argument, skipped when another lever already added the flag (edge_optimize.py gathers them all)."""
  if names[0] not in group._option_string_actions: group.add_argument(*names, **kwargs)
