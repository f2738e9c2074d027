"""The interpreter start-up hook: what `orin_tegra_backend.pth` (installed into site-packages) runs.

The .pth line itself only stats /dev/nvgpu/igpu0/ctrl (and reads TEGRA_FAKE); on any other machine it stops there: no
import, no output. When the node exists (a Jetson) or TEGRA_FAKE=1, `run()`:
  1. translates the legacy device flags (NV=1, CUDA=1, ...) into DEV=..., as `import common` does, because tinygrad
     0.14.0 refuses them and reads DEV once, when it is first imported;
  2. arranges for `backend.install()` to run the moment tinygrad imports `tinygrad.runtime.ops_nv` (an import hook), so
     the Tegra NVDevice is in place before the first Device["NV"] without importing tinygrad at start-up.
Every failure is one line on stderr; the hook never stops the interpreter from starting.
"""
import os, sys

# device flags people type; only when one of these is set does the hook look further (tinygrad's list needs a glob)
FLAG_NAMES = ("NV", "CUDA", "CPU", "CLANG", "LLVM", "AMD", "METAL", "CL", "QCOM", "WEBGPU", "PYTHON", "NULL", "DSP", "REMOTE")
TARGET = "tinygrad.runtime.ops_nv"
PTH_LINE = ("import os; (os.path.exists('/dev/nvgpu/igpu0/ctrl') or os.environ.get('TEGRA_FAKE') == '1') "
            "and __import__('backend._startup')._startup.run()\n")

def _warn(msg:str) -> None: print(f"warning: tegra start-up hook: {msg}", file=sys.stderr)

def _common_env():
  """common/env.py, loaded on its own: importing the `common` package would run its whole set-up (and its exits)."""
  import importlib.util
  spec = importlib.util.find_spec("common")   # a top-level find_spec does not execute the package
  if spec is None or not spec.submodule_search_locations: raise RuntimeError("the common package is not installed")
  path = os.path.join(list(spec.submodule_search_locations)[0], "env.py")
  env_spec = importlib.util.spec_from_file_location("_orin_common_env", path)
  module = sys.modules[env_spec.name] = importlib.util.module_from_spec(env_spec)   # dataclasses look their module up there
  env_spec.loader.exec_module(module)
  return module

def translate_flags(environ=os.environ) -> None:
  if not any(k in environ for k in FLAG_NAMES): return
  common_env = _common_env()
  try: common_env.translate(environ)
  except common_env.DeviceFlagError as e: _warn(f"{e} (DEV left as it was)")

class _AfterImport:
  """A one-shot meta-path finder: lets the real loader import `target`, then runs `action` on the fresh module; a failure
  is one warning line, prefixed with `what`."""
  def __init__(self, target, action, what):
    self.target, self.action, self.what = target, action, what
  def find_spec(self, fullname, path=None, target=None):
    if fullname != self.target: return None
    sys.meta_path.remove(self)   # one shot; also keeps the lookup below from finding us again
    import importlib.util
    spec = importlib.util.find_spec(fullname)
    if spec is None or spec.loader is None: return spec
    exec_module = spec.loader.exec_module
    def exec_and_run(module):
      exec_module(module)
      sys.modules[fullname] = module   # backend.tegra imports ops_nv: it must find this module, not a second copy
      try: self.action()
      except Exception as e: _warn(f"{self.what}: {' '.join(str(e).split()) or type(e).__name__}")
    spec.loader.exec_module = exec_and_run
    return spec

def _install_backend() -> None:
  import backend
  backend.install()

def _install_reduce_split() -> None:
  import backend
  backend.install_reduce_split()

SCHEDULER = "tinygrad.schedule.rangeify"

def hook(target, action, what) -> None:
  """Run `action` now if `target` is already imported, else right after it is."""
  if target in sys.modules: action()
  elif not any(isinstance(f, _AfterImport) and f.target == target for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterImport(target, action, what))

def run() -> None:
  try:
    translate_flags()
    # the split of long sums must be in place before the first schedule, which comes before any device module loads
    if os.environ.get("REDUCE_SPLIT", "1") != "0": hook(SCHEDULER, _install_reduce_split, "reduce split not applied")
    hook(TARGET, _install_backend, "tegra backend not loaded")
  except Exception as e: _warn(' '.join(str(e).split()) or type(e).__name__)
