"""tinygrad habits every training script needs, written once.

    realize_init(model, opt)                  # before the first TinyJit call of a training step
    for idx in shuffled_batches(n, 128, rng)  # fixed-size batches: the JIT replays every step
    probs = predict_in_batches(predict, x, 250)   # evaluation in fixed-size batches, last one padded
    if on_cpu(): ...                          # smaller defaults for the CPU device

Why each exists:
  - A TinyJit runs a step once plainly and captures it on the second call. If the initial weights,
    Adam's zero moments and the random-number counter are still lazy then, their kernels fuse into the
    first step, whose schedule then differs from every later step's: it is compiled twice, and the
    captured graph can keep recomputing the initial values. `realize_init` computes them now.
  - A TinyJit replays only calls whose inputs have the shapes it captured: a short last batch would
    make it fail (or recapture). Training drops the remainder; evaluation pads it and drops the rows.
"""
from __future__ import annotations
from typing import Callable, Iterator

import numpy as np


def realize_init(*objs) -> None:
  """Realize every tensor of models and optimizers (`nn.state.get_parameters` finds them) and the
  random-number state that their initialization advanced."""
  from tinygrad import Tensor
  from tinygrad.nn.state import get_parameters
  # tinygrad 0.14.0 keeps the RNG counters in a class attribute and offers no public handle on them;
  # this is the one place that reads it (the version is pinned in pyproject.toml)
  rng_state = list(getattr(Tensor, "_device_rng_counters", {}).values())
  Tensor.realize(*[t for o in objs for t in get_parameters(o)], *rng_state)


def shuffled_batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
  """Endless minibatch indices of exactly `batch` items, reshuffled every epoch (the remainder of
  each epoch is dropped, so every step has the shape the JIT captured)."""
  if not 0 < batch <= n: raise ValueError(f"shuffled_batches: batch {batch} must be between 1 and the {n} items")
  while True:
    order = rng.permutation(n)
    for i in range(0, n - batch + 1, batch): yield order[i:i + batch]


def predict_in_batches(fn: Callable, x: np.ndarray, batch: int) -> np.ndarray:
  """fn(Tensor of `batch` rows) -> Tensor, applied over all of `x` in fixed-size batches (the last one
  zero-padded), concatenated as numpy with the padding rows dropped."""
  from tinygrad import Tensor
  out = []
  for i in range(0, len(x), batch):
    chunk = x[i:i + batch]
    if len(chunk) < batch: chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *x.shape[1:]), x.dtype)])
    out.append(fn(Tensor(np.ascontiguousarray(chunk))).numpy()[:min(batch, len(x) - i)])
  return np.concatenate(out)


def on_cpu() -> bool:
  """Is the default device a CPU (where smaller default sizes keep a demo to minutes)?"""
  from tinygrad import Device
  return Device.DEFAULT.split(":")[0] in ("CPU", "PYTHON", "NULL")
