"""The device report and helpers that open the device, after common.env has settled DEV.

    python3 -m common.device            # what tinygrad will use, and why
    python3 -m common.device --bench    # matmul GFLOP/s, memory GB/s, launch and JIT replay latency

Imports point one way: common.env <- common.device <- common.bench <- common.microbench (which holds
the command line of `python3 -m common.device`).
"""
from __future__ import annotations
import os, sys
from typing import TYPE_CHECKING

from common.cli import UserError

if TYPE_CHECKING: from tinygrad import Tensor
from common.env import TEGRA_NODES, setup

# ---- after setup: helpers that open the device -------------------------------------------------

def open_device():
  """Open the default device, turning tinygrad's failure into a one-line UserError (exit 2)."""
  from tinygrad import Device
  try:
    return Device[Device.DEFAULT]
  except Exception as e:
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, BaseExceptionGroup): msg = "; ".join(" ".join(str(x).split()) for x in e.exceptions)
    if Device.DEFAULT == "NV" and not str(e).strip():   # tinygrad's NV gives a bare exception when it knows no GPU here
      msg += (" (tinygrad's NV found no GPU it drives: on a Jetson, python3 -m backend.selftest says why the Tegra backend did"
              " not load; a desktop GPU newer than tinygrad 0.14's NV interface, such as Hopper, runs with DEV=CUDA)")
    raise UserError(f"cannot open device {os.environ.get('DEV') or 'auto'}: {msg[:300]}")


def synchronize() -> None:
  from tinygrad import Device
  Device[Device.DEFAULT].synchronize()


def copy_into(t: Tensor, array) -> Tensor:
  """Overwrite a realized, contiguous device tensor with a numpy array of the same dtype and size, as one
  host-to-device copy. Tensor(array) would build and schedule a new graph per call: ~2 ms of Python
  on a 2-core CPU against ~0.2 ms for this, which matters in a loop that runs hundreds of times a second.
  A TinyJit that took t as an input reads the new values on its next replay."""
  import numpy as np
  from tinygrad.device import Buffer
  from tinygrad.dtype import _from_np_dtype
  from tinygrad.uop.ops import Ops
  u = t.uop
  while u.op is Ops.RESHAPE: u = u.src[0]          # a reshape of a whole buffer is still that buffer, in order
  if u.op is not Ops.BUFFER or not u.is_realized: raise ValueError("copy_into needs a realized, contiguous tensor")
  buf, array = u.buffer, np.ascontiguousarray(array)
  if _from_np_dtype(array.dtype) != buf.dtype or array.shape != t.shape:
    raise ValueError(f"copy_into: a {array.dtype} array of shape {array.shape} into a {buf.dtype} tensor of shape {t.shape}")
  buf.copy_from(Buffer("NPY", array.size, buf.dtype, opaque=array))
  return t


def describe_device() -> dict[str, str]:
  """Device, renderer and compiler of the default device (opens it)."""
  from tinygrad import Device
  dev = open_device()
  renderer = getattr(dev, "renderer", None)
  compiler = getattr(dev, "compiler", None)
  return {"device": Device.DEFAULT,
          "renderer": type(renderer).__name__ if renderer is not None else "?",
          "arch": str(getattr(renderer, "arch", "") or getattr(dev, "arch", "") or "-"),
          "compiler": type(compiler).__name__ if compiler is not None else "-",
          "interface": type(dev.iface).__name__ if hasattr(dev, "iface") else "-"}


def tinygrad_version() -> str:
  from importlib.metadata import version, PackageNotFoundError
  try: return version("tinygrad")
  except PackageNotFoundError: return "unknown"


def report() -> list[tuple[str, str]]:
  state = setup()
  rows: list[tuple[str, str]] = [("tinygrad", tinygrad_version()), ("python", sys.version.split()[0])]
  req = state.resolution.requested
  rows.append(("requested flags", " ".join(f"{k}={v}" for k, v in req.items()) or "(none)"))
  rows.append(("resolved DEV", state.resolution.dev or "(tinygrad picks the first available)"))
  rows += list(describe_device().items())
  rows.append(("tegra nodes", ", ".join(f"{n} {'present' if os.path.exists(n) else 'missing'}" for n in TEGRA_NODES)))
  rows.append(("tegra backend", state.tegra))
  rows.append(("matvec fix", state.matvec_fix))
  rows.append(("reduce split", state.reduce_split))
  rows.append(("program cache", state.program_cache))
  try:
    import backend
    rows += [(f"backend: {k}", v) for k, v in backend.describe().items()]
  except Exception as e:
    rows.append(("backend", f"import failed: {e}"))
  for name in ("JITBEAM", "BEAM", "DEBUG"):
    rows.append((name, os.environ.get(name, "0 (unset)")))
  return rows


if __name__ == "__main__":   # the command-line entry lives with the microbenchmarks, which sit above this module
  from common.microbench import main
  sys.exit(main())
