"""Shared plumbing for the six projects. Import it first, before tinygrad:

    import common                      # translates NV=1 / CUDA=1 / CPU=1 into DEV=..., loads the Tegra backend on a Jetson
    from tinygrad import Tensor, TinyJit

What lives here, once, so no project copies it:
  common.env     flag translation (NV=1 -> DEV=NV, ...) and loading the Tegra backend, at import
  common.device  the device report, `python3 -m common.device [--bench]`, open_device()/synchronize()
  common.cli     the standard flags (--bench --json --out --seed --quick --save --load), one-line errors, PASS/FAIL
  common.bench   device-synchronized timing: warm-up apart from steady state, median/p10/p90/p99, tables, JSON
  common.compare the same script's --bench on several backends side by side (NV vs CUDA vs CPU)
  common.files   output checks, atomic writes, checkpoints (safetensors), the image and audio readers
  common.datasets labelled folders, held-out splits, MNIST idx files
  common.train   tinygrad training habits: realize_init, fixed-size batches, on_cpu
  common.plots   matplotlib (Agg) figures written atomically: curves, confusion matrices, image grids
"""
from common.env import setup as _setup

SETUP = _setup()   # must run before tinygrad reads DEV: that happens when tinygrad is first imported

from common.cli import UserError, fail, project_parser, run_main, check  # noqa: E402, F401  (re-exported)


def __getattr__(name: str):
  """`common.device`, `common.bench`, ... without importing each: loaded on first use (not at import,
  so `python3 -m common.device` runs its module once)."""
  if name in ("bench", "cli", "compare", "device", "files", "microbench", "plots", "tour", "digits", "datasets", "train"):
    import importlib
    return importlib.import_module(f"common.{name}")
  raise AttributeError(f"module 'common' has no attribute {name!r}")


def seed_all(seed: int):
  """Seed tinygrad's and numpy's generators; return a numpy Generator for data that needs its own stream."""
  import numpy as np
  from tinygrad import Tensor
  Tensor.manual_seed(seed)
  np.random.seed(seed)
  return np.random.default_rng(seed)


def log(msg: str) -> None:
  """Print a line without breaking a live progress bar (and without terminal escapes in a log file)."""
  import sys
  if sys.stderr.isatty():
    from tinygrad.helpers import tqdm
    tqdm.write(msg)
  else:
    print(msg, flush=True)


def progress(iterable=None, total=None, desc: str = "", **kw):
  """tinygrad's own progress bar (tinygrad.helpers.tqdm), shown only on a terminal so logs stay clean."""
  from tinygrad.helpers import tqdm
  return tqdm(iterable, total=total, desc=desc, disable=kw.pop("disable", None), **kw)
