"""Choosing the device: the flags Jetson users type, translated for tinygrad 0.14.0.

Jetson tutorials say `NV=1 python3 script.py` or `CUDA=1 ...`; tinygrad 0.14.0 refuses those flags
("NV=1 is deprecated, use DEV=NV") and reads only `DEV=...`, once, when it is first imported. So
`common` is imported before tinygrad and rewrites the environment:

    NV=1        -> DEV=NV          CUDA=1 -> DEV=CUDA          CPU=1 -> DEV=CPU
    X=1         -> DEV=X           for any other tinygrad device X (AMD, CL, METAL, ...)
    CLANG=1     -> DEV=CPU         LLVM=1 -> DEV=CPU:LLVM      (names older tinygrad used)
    DEV=...     -> unchanged       including interface syntax such as DEV=TEGRA+NV
    NV=1 CUDA=1 -> one-line error, exit 2 (two devices asked for at once)

On a Jetson (the nodes /dev/nvgpu/igpu0/ctrl and /dev/nvmap exist) asking for NV, or for nothing,
loads the bundled Tegra backend from `backend/` first, because tinygrad's own NV interfaces speak
only to the desktop driver. `DEV=TEGRA+NV` asks for that backend by name. `TEGRA_FAKE=1` stands in
for a Jetson: the backend then drives the fake Orin (backend/testing/fake_driver.py).

The same translation runs without `import common` too: the installed start-up hook
(backend/_startup.py) calls `translate` on a Jetson, so plain tinygrad programs get it.

`python3 -m common.device` (common/device.py) prints what was resolved.
"""
from __future__ import annotations
import glob, importlib.util, os, sys
from dataclasses import dataclass, field
from pathlib import Path

TEGRA_NODES = ("/dev/nvgpu/igpu0/ctrl", "/dev/nvmap")
DESKTOP_NV_NODE = "/dev/nvidiactl"
NVIDIA_PCI_VENDOR = "0x10de"
# names of the pre-0.14 CPU backends, which users still type
LEGACY_ALIASES = {"CLANG": "CPU", "LLVM": "CPU:LLVM"}
# tinygrad's own list of devices that are never picked from a flag (see Device._select_device)
NOT_SELECTABLE = {"DISK", "TINYFS", "NPY"}
PASSTHROUGH = ("JITBEAM", "BEAM", "DEBUG")


class DeviceFlagError(Exception):
  """A device request that cannot be satisfied; the message is one line for the user."""


def tinygrad_devices() -> list[str]:
  """Device names tinygrad 0.14.0 knows (its runtime/ops_*.py files), found without importing it:
  importing tinygrad reads DEV, which must be settled first."""
  spec = importlib.util.find_spec("tinygrad")
  if spec is None or not spec.submodule_search_locations:
    raise DeviceFlagError("tinygrad is not installed: run the set-up in README.md (pip install tinygrad==0.14.0)")
  runtime = Path(list(spec.submodule_search_locations)[0]) / "runtime"
  return sorted(p.stem[len("ops_"):].upper() for p in runtime.glob("ops_*.py"))


def target_devices(dev: str) -> list[str]:
  """Device names in a DEV string: 'TEGRA+NV' -> ['NV'], 'CPU:LLVM' -> ['CPU'], 'NV;CPU' -> ['NV', 'CPU']."""
  return [t.split("+")[-1].split(":")[0].upper() for t in dev.split(";") if t.strip()]


def target_interface(dev: str) -> str:
  """Interface named in the first DEV target: 'TEGRA+NV' -> 'TEGRA', 'NV' -> ''."""
  first = dev.split(";")[0]
  return first.split("+")[0].rsplit(":", 1)[0].upper() if "+" in first else ""


@dataclass
class Resolution:
  dev: str | None                          # the DEV value tinygrad will read (None: tinygrad picks)
  requested: dict[str, str] = field(default_factory=dict)   # the flags as the user typed them
  remove: list[str] = field(default_factory=list)           # legacy flags to take out of the environment
  wants_nv: bool = False                   # NV asked for, by flag or DEV
  wants_tegra: bool = False                # the Tegra interface named (DEV=TEGRA+NV)


def resolve(environ: dict[str, str], devices: list[str]) -> Resolution:
  """Translate legacy flags to DEV. Pure: reads `environ`, changes nothing."""
  known = set(devices)
  flags = {name: environ[name] for name in sorted(known - NOT_SELECTABLE | set(LEGACY_ALIASES)) if name in environ}
  requested = dict(flags)
  for name in ("DEV",) + PASSTHROUGH:
    if name in environ: requested[name] = environ[name]
  asked: dict[str, str] = {}               # flag -> DEV value it asks for
  for name, value in list(flags.items()):
    if not value.strip().lstrip("-").isdigit():
      del flags[name]                       # e.g. CUDA=/usr/local/cuda: not a device flag, leave it be
      continue
    if int(value) == 0: continue
    if int(value) != 1:
      raise DeviceFlagError(f"{name}={value} is not understood: use {name}=1 or DEV={LEGACY_ALIASES.get(name, name)}")
    asked[name] = LEGACY_ALIASES.get(name, name)
  if len(set(asked.values())) > 1:
    raise DeviceFlagError("conflicting device flags " + " and ".join(f"{k}=1" for k in asked) + ": choose one")
  dev = environ.get("DEV", "").strip() or None
  if dev is not None:
    for d in target_devices(dev):
      if d not in known:
        raise DeviceFlagError(f"DEV={dev} names no tinygrad device {d!r} (known: {', '.join(sorted(known))})")
    if asked:
      flag, wanted = next(iter(asked.items()))
      if target_devices(wanted)[0] not in target_devices(dev):
        raise DeviceFlagError(f"{flag}=1 conflicts with DEV={dev}: choose one")
  elif asked:
    dev = next(iter(asked.values()))
  iface = target_interface(dev) if dev else ""
  wants_nv = dev is not None and target_devices(dev)[:1] == ["NV"]
  return Resolution(dev=dev, requested=requested, remove=list(flags), wants_nv=wants_nv, wants_tegra=iface == "TEGRA")


def tegra_nodes_present(nodes: tuple[str, ...] = TEGRA_NODES, environ=os.environ) -> bool:
  return environ.get("TEGRA_FAKE") == "1" or all(os.path.exists(n) for n in nodes)


def translate(env) -> Resolution:
  """Rewrite the legacy flags in `env` (a mutable mapping) into DEV=...; raises DeviceFlagError with a one-line reason."""
  res = resolve(dict(env), tinygrad_devices())
  for name in res.remove: env.pop(name, None)
  if res.dev is not None: env["DEV"] = res.dev     # spawned BEAM workers inherit it too
  return res


def nvidia_gpu_evidence() -> list[str]:
  """What on this machine says an NVIDIA GPU is here (empty: none)."""
  found = [n for n in (DESKTOP_NV_NODE,) + TEGRA_NODES if os.path.exists(n)]
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      if open(vendor).read().strip() == NVIDIA_PCI_VENDOR: found.append(os.path.dirname(vendor))
    except OSError: pass
  return found


@dataclass
class Setup:
  resolution: Resolution
  tegra: str = "not a Jetson (no Tegra device nodes)"   # what happened with the Tegra backend
  matvec_fix: str = "off"
  reduce_split: str = "off"                          # backend/patches/split.py: weight gradients split into two kernels
  program_cache: str = "off"                         # backend/patches/program_cache.py: lowered kernels kept on disk


SETUP: Setup | None = None


def _fail(msg: str) -> None:
  print(f"error: {msg}", file=sys.stderr)
  raise SystemExit(2)


def setup() -> Setup:
  """Apply the translation to this process's environment (before tinygrad is imported) and load the
  Tegra backend when it applies. Runs once, from `import common`."""
  global SETUP
  if SETUP is None: SETUP = apply(os.environ)
  return SETUP


def apply(env, nodes: tuple[str, ...] = TEGRA_NODES) -> Setup:
  """`setup` for a given environment mapping and Tegra node paths (tests pass their own)."""
  if "tinygrad.helpers" in sys.modules and any(env.get(k) == "1" for k in ("NV", "CUDA", "CPU", *LEGACY_ALIASES)):
    # tinygrad has already read DEV; a rewrite now would be too late to matter for this process
    print("warning: import common before tinygrad so NV=1/CUDA=1/CPU=1 take effect", file=sys.stderr)
  try:
    res = translate(env)
  except DeviceFlagError as e:
    _fail(str(e))
  state = Setup(res)
  on_jetson = tegra_nodes_present(nodes, env)
  if on_jetson: state.tegra = "Jetson detected, backend not requested (DEV names another device)"
  if res.wants_nv and not res.wants_tegra and not on_jetson and not nvidia_gpu_evidence():
    _fail(f"NV requested but no NVIDIA GPU found (looked for {DESKTOP_NV_NODE}, {' and '.join(TEGRA_NODES)}, "
          f"and a PCI device of vendor {NVIDIA_PCI_VENDOR}); use DEV=CPU on this machine")
  if res.wants_tegra or (on_jetson and (res.dev is None or res.wants_nv)):
    try:
      import backend
      backend.install()
      state.tegra = "installed"
    except Exception as e:  # the backend must never take tinygrad's own interfaces down with it
      reason = _one_line(e)
      state.tegra = f"not loaded: {reason}"
      print(f"warning: tegra backend not loaded: {reason}; carrying on with tinygrad's own NV interfaces", file=sys.stderr)
  fix = env.get("MATVEC_FIX", "")
  if fix == "1" or (state.tegra == "installed" and fix != "0"): state.matvec_fix = _patch("matvec fix", "install_matvec_fix", "on")
  split_min = env.get("REDUCE_SPLIT_MIN", "4096")
  if not split_min.isdigit() or int(split_min) < 1: _fail(f"REDUCE_SPLIT_MIN={split_min!r}: give a whole number of terms, e.g. 4096")
  if env.get("REDUCE_SPLIT", "1") != "0":            # on for every program that imports common (it leaves CPU kernels alone)
    state.reduce_split = _patch("reduce split", "install_reduce_split", f"on (sums of >= {split_min} terms, GPUs)")
  if env.get("PROGRAM_CACHE", "1") != "0":          # lowered kernels kept in tinygrad's CACHEDB: a rerun skips code generation
    state.program_cache = _patch("program cache", "install_program_cache", "on (tinygrad's CACHEDB)")
  return state


def _patch(what: str, installer: str, on: str) -> str:
  """Apply one of backend's tinygrad patches; a failure is a warning line, never the end of the run. -> the status."""
  try:
    import backend
    getattr(backend, installer)()
    return on
  except Exception as e:
    status = f"not applied: {_one_line(e)}"
    print(f"warning: {what} not applied: {status}", file=sys.stderr)
    return status


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split()) or type(e).__name__
