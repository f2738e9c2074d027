"""The Tegra (Jetson Orin nvgpu/nvmap) backend for tinygrad 0.14.0, as a plug-in: tinygrad itself is not modified.

Contract with common/: importing this package never imports tinygrad; `install()` registers the backend with tinygrad
before the first device is opened and raises with a one-line reason when it cannot; `install_matvec_fix()` enables the
fp16 matvec heuristic fix (any device); `describe()` returns lines for `python3 -m common.device`.
See backend/README.md for the tutorial.
"""
import os, sys

__version__ = "0.1.0"
TEGRA_NODES = ("/dev/nvgpu/igpu0/ctrl", "/dev/nvmap")
_state = {"installed": False, "error": None}

def install() -> None:
  """Register TEGRAIface and the Tegra NVDevice with tinygrad (idempotent). Raises with a one-line reason on failure."""
  if _state["installed"]: return
  try:
    from backend import devio
    io = devio.get_io()
    if (missing:=[p for p in TEGRA_NODES if not io.exists(p)]):
      raise RuntimeError(f"Tegra device node {missing[0]} is missing (not a Jetson, or the nvgpu driver is not loaded)")
    from tinygrad.runtime import ops_nv
    from tinygrad.device import Device
    if "NV" in Device._opened_devices: raise RuntimeError("Device['NV'] was opened before backend.install(); install first")
    from backend import tegra
    ops_nv.NVDevice = tegra.NVDevice   # Device.get_class looks the class up by this attribute name
    Device.get_class.cache_clear()
    _state["installed"], _state["error"] = True, None
  except Exception as e:
    _state["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise RuntimeError(_state["error"]) from e
  if os.environ.get("MATVEC_FIX", "1") != "0": install_matvec_fix()
  if os.environ.get("REDUCE_SPLIT", "1") != "0":
    try: install_reduce_split()
    except Exception as e: print(f"warning: reduce split not applied: {' '.join(str(e).split())}", file=sys.stderr)
  if os.environ.get("PROGRAM_CACHE", "1") != "0":
    try: install_program_cache()
    except Exception as e: print(f"warning: program cache not applied: {' '.join(str(e).split())}", file=sys.stderr)

def install_matvec_fix() -> None:
  """Give fp16 (and other CAST/MUL-wrapped) matrix-vector products tinygrad's MATVEC optimization, here and in compile
  and BEAM worker processes. See backend/matvec.py."""
  from backend.patches import matvec
  matvec.install()

def install_reduce_split() -> None:
  """Split long sums with several output axes (training's weight gradients) into two kernels from 4,096 terms per output
  instead of tinygrad's 32,768, on GPUs. Must run before the first schedule. See backend/patches/split.py."""
  from backend.patches import split
  split.install()

def install_program_cache() -> None:
  """Keep lowered kernels in tinygrad's disk cache, so a rerun skips code generation. See backend/patches/program_cache.py."""
  from backend.patches import program_cache
  program_cache.install()

def describe() -> dict[str, str]:
  from backend import devio
  try: io = devio.get_io()
  except Exception as e: return {"tegra backend": f"{__version__}, I/O unavailable: {e}"}
  present = [p for p in TEGRA_NODES if io.exists(p)]
  missing = [p for p in TEGRA_NODES if p not in present]
  status = "installed" if _state["installed"] else (f"not loaded: {_state['error']}" if _state["error"] else "not installed")
  from backend.patches import matvec
  out = {"tegra backend": f"{__version__}, {status}", "tegra nodes present": ", ".join(present) or "none",
         "tegra nodes missing": ", ".join(missing) or "none", "tegra device I/O": getattr(io, "name", type(io).__name__),
         "matvec fix": "on" if matvec.is_installed() else "off"}
  from backend.patches import split
  out["reduce split"] = "on" if split.is_installed() else "off"
  from backend.patches import program_cache
  out["program cache"] = "on" if program_cache.is_installed() else "off"
  return out
