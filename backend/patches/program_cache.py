"""Keep tinygrad 0.14.0's lowered kernels on disk, so the second run of a program skips its code generation.

Before a kernel runs, tinygrad lowers its AST to a program: the optimizer picks a layout, some thirty rewrite passes
turn it into a linear list of UOps, a renderer writes source and a compiler builds a binary. tinygrad keeps the binary
on disk (`Compiler.compile_cached`, keyed by source), but the lowering only in a dict that dies with the process
(`tinygrad.codegen.to_program_cache`). The lowering is pure Python and is most of a first training step's time on a
small CPU: on the 2-core test machine `python3 generative/generative_models.py --model autoencoder --train --steps 20
--quick` took 58.2 s with an empty cache and 21.2 s run again. This patch stores each lowered program in tinygrad's
own disk cache (CACHEDB, table `lowered_program`) and looks it up before lowering, so a rerun skips that work.

The key is tinygrad's own in-process key (the AST's content hash, the renderer's class and target, and the
ContextVars tinygrad lists as changing programs) extended with everything else that can change a program:
  - the tinygrad version and a hash of the tinygrad sources that lower and compile a kernel (codegen/, renderer/,
    uop/, engine/, helpers.py, device.py, the compilers in runtime/support/), of the renderer class's own file and of
    `backend/patches/*.py`; which of those patches are installed, and which function is tinygrad's heuristic now
    (so an edited tinygrad or a monkeypatched heuristic gets its own entries);
  - the value of every environment variable those sources read by name (`getenv("X")`, `ContextVar("X")`,
    `environ.get("X")`), when set, and the value now of every ContextVar those sources name, but DEBUG's, PARALLEL's and
    DEV's (so a `with Context(...)` block has its own entries; a runtime module's own ContextVars, which exist only in a
    process that imported it, are left out, so a test process and the scripts it runs share entries).
The CPU device's four queue programs, which tinygrad lowers each time the device opens (0.3 s of every CPU process's
start on the 2-core machine), go through the same table. A key that changes where it need not only costs a miss. Not
stored: kernels that BEAM searches (KernelInfo.beam > 0; BEAM keeps its own cache of the options it found, and a
budgeted search, common.beam, leaves kernels it did not reach for a later search to find); kernels whose compiler
keeps no disk cache either (tinygrad's `CCACHE=0`, the fake Orin's compiler); and nothing is read or written while
DEBUG >= 3 or VIZ is set, so their output is complete.

`PROGRAM_CACHE=0` turns this off, as does tinygrad's `CACHELEVEL=0`. To empty it and keep BEAM's results and the
compiled binaries: `sqlite3 ~/.cache/tinygrad/cache.db 'DROP TABLE lowered_program_22'` (22: tinygrad's cache
schema). Each entry is a pickled PROGRAM UOp with its binary, a few KB to tens of KB per kernel; nothing evicts them.
"""
import functools, hashlib, importlib.metadata, os, pickle, re, sys, types
from pathlib import Path

TABLE = "lowered_program"
_state: dict = {"orig": None, "enabled": False, "hits": 0, "stored": 0, "queue_hits": 0, "queue_lowered": 0}
CPU_RUNTIME = "tinygrad.runtime.ops_cpu"
ENV_NAME = re.compile(r"""(?:getenv|ContextVar|environ\.get)\(\s*["']([A-Z][A-Z0-9_]*)["']""")
# printing, the size of the compile pool and the default device do not change a program (the renderer and its target,
# part of the key, say which device it is for): DEV is a list once a process has opened devices, empty in a fresh
# one, and keying on it kept a test process from finding what the scripts it ran had lowered
NOT_KEYED = {"DEBUG", "PARALLEL", "PROGRAM_CACHE", "DEV"}


def _hook(linear):
  return _program_cache_lower_and_compile(linear)  # noqa: F821  (looked up in tinygrad's realize module, where install() puts it)


def enabled() -> bool:
  from tinygrad.helpers import CACHELEVEL, DEBUG, VIZ
  return _state["enabled"] and os.environ.get("PROGRAM_CACHE", "1") != "0" and CACHELEVEL >= 1 and DEBUG < 3 and not VIZ


@functools.cache
def _env_names() -> tuple[str, ...]:
  """Every environment variable name that the lowering sources read by name."""
  names: set[str] = set()
  for f in _lowering_sources(): names.update(ENV_NAME.findall(f.read_text(errors="replace")))
  return tuple(sorted(names - NOT_KEYED))


@functools.cache
def _lowering_sources() -> tuple[Path, ...]:
  """The files whose code can change a lowered program: tinygrad's lowering and compilers, and the heuristic patches."""
  import tinygrad
  tg = Path(tinygrad.__file__).parent
  files = [f for d in ("codegen", "renderer", "uop", "engine") for f in (tg / d).rglob("*.py")]
  files += [tg / "helpers.py", tg / "device.py", *(tg / "runtime" / "support").glob("compiler*.py")]
  files += Path(__file__).resolve().parent.glob("*.py")
  return tuple(sorted(f for f in files if f.is_file()))


@functools.cache
def _file_hash(path: str) -> str:
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and os.path.exists(path) else ""


@functools.cache
def _static_part() -> str:
  h = hashlib.sha256()
  for f in _lowering_sources(): h.update(f.read_bytes())
  try: version = importlib.metadata.version("tinygrad")
  except importlib.metadata.PackageNotFoundError: version = "unknown"   # a tinygrad on PYTHONPATH: its sources are hashed anyway
  return f"{version}|{h.hexdigest()}"


def _installed_patches() -> str:
  from backend.patches import matvec, split
  from tinygrad.codegen.opt import heuristic    # apply_opts looks the function up here at every kernel
  h = heuristic.hand_coded_optimizations
  return f"matvec={matvec.is_installed()},split={split.is_installed()},heuristic={h.__module__}.{h.__qualname__}"


def disk_key(program_key: tuple, renderer) -> str:
  """The cache key of a kernel: tinygrad's `to_program_key` plus what else can change its program (module docstring)."""
  import inspect
  from tinygrad.helpers import ContextVar
  src = inspect.getsourcefile(type(renderer)) or ""
  env = tuple((n, os.environ[n]) for n in _env_names() if n in os.environ)
  # only the ContextVars the lowering sources name: which others exist depends on what a process imported (a runtime
  # module's own ContextVars), and keying on them kept processes from sharing entries
  names = set(_env_names())
  ctx = tuple(sorted((k, repr(v.value)) for k, v in ContextVar._cache.items() if k in names))
  ast_key, ren_type, *rest = program_key
  parts = (ast_key.hex() if isinstance(ast_key, bytes) else repr(ast_key), f"{ren_type.__module__}.{ren_type.__qualname__}",
           repr(rest), _file_hash(src), _static_part(), _installed_patches(), repr(env), repr(ctx))
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _storable(ast, renderer) -> bool:
  from tinygrad.uop.ops import Ops, KernelInfo
  if getattr(renderer.compiler, "cachekey", None) is None: return False   # CCACHE=0, or a compiler that keeps nothing on disk
  if ast.op is Ops.SINK: return isinstance(ast.arg, KernelInfo) and ast.arg.beam == 0
  return ast.op is Ops.PROGRAM   # an already lowered kernel that still needs its binary


def _warn(what: str, e: BaseException) -> None:
  if not _state.get("warned"): print(f"warning: program cache {what}: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
  _state["warned"] = True


def lower_and_compile(linear):
  """tinygrad's lower_and_compile, with the kernels it would lower first looked up on disk and the rest stored after."""
  orig = _state["orig"]
  if not enabled(): return orig(linear)
  g = orig.__globals__
  from tinygrad.helpers import diskcache_get, diskcache_put
  from tinygrad.uop.ops import Ops
  cache, key_of = g["to_program_cache"], g["to_program_key"]
  wanted: dict[tuple, str] = {}
  missed = []
  try:
    for c in linear.toposort():
      if c.op is not Ops.CALL or (a:=g["_get_call_to_compile"](c)) is None or not _storable(*a): continue
      if (k:=key_of(*a)) in cache or k in wanted: continue
      wanted[k] = disk_key(k, a[1])
    for k, dk in wanted.items():
      try: prg = diskcache_get(TABLE, dk)
      except Exception: prg = None     # an entry pickled by another build of these classes: lower it again
      if prg is None: missed.append(k)
      else: cache[k], _state["hits"] = prg, _state["hits"] + 1
  except Exception as e:             # no key, no cache: tinygrad lowers as it would without this patch
    _warn("not used", e)
    return orig(linear)
  out = orig(linear)
  for k in missed:
    if (prg:=cache.get(k)) is None: continue
    try: blob = pickle.dumps(prg)
    except Exception: continue       # this kernel cannot be kept; the others still can
    try: diskcache_put(TABLE, wanted[k], blob, prepickled=True)
    except Exception as e:           # a full disk or a locked database costs the next run its lowering, never this run
      _warn("not written", e)
      return out
    _state["stored"] += 1
  return out


def _cache_cpu_queue_programs() -> None:
  """tinygrad's CPU device lowers four queue programs (signal, wait, timestamp, the worker loop) every time it opens:
  0.3 s of a 2-core machine's start, paid by every process. They go through the same table, keyed the same way."""
  from tinygrad.runtime import ops_cpu
  lower = ops_cpu.do_to_program
  if getattr(lower, "program_cached", False): return
  def do_to_program(ast, renderer):
    if not enabled() or not _storable(ast, renderer): return lower(ast, renderer)
    from tinygrad.codegen import to_program_key
    from tinygrad.helpers import diskcache_get, diskcache_put
    try:
      key = disk_key(to_program_key(ast, renderer), renderer)
      prg = diskcache_get(TABLE, key)
    except Exception: key, prg = None, None
    if prg is not None:
      _state["queue_hits"] += 1
      return prg
    prg = lower(ast, renderer)
    _state["queue_lowered"] += 1
    if key is not None:
      try: diskcache_put(TABLE, key, pickle.dumps(prg), prepickled=True)
      except Exception as e: _warn("not written", e)
    return prg
  do_to_program.program_cached = True
  ops_cpu.do_to_program = do_to_program


def install() -> None:
  """Idempotent. Replaces the code of tinygrad.engine.realize.lower_and_compile, so every caller (the schedule's
  realize and the HCQ graph, which imported it by name) goes through the cache; and the CPU device's queue programs,
  once tinygrad imports its CPU runtime (an import hook: a process that never opens the CPU does not import it)."""
  from backend import _startup
  _startup.hook(CPU_RUNTIME, _cache_cpu_queue_programs, "program cache: the CPU queue programs are lowered as usual")
  from tinygrad.engine import realize
  if _state["orig"] is None:
    f = realize.lower_and_compile
    if hasattr(realize, "_program_cache_lower_and_compile") or f.__code__ is _hook.__code__:
      raise RuntimeError("tinygrad's lower_and_compile already goes through a program cache (a second copy of this module?)")
    if not isinstance(f, types.FunctionType) or f.__name__ != "lower_and_compile" or f.__code__.co_freevars:
      raise RuntimeError("tinygrad's lower_and_compile was already replaced by another hook; install the program cache first")
    _state["orig"] = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__)
    realize._program_cache_lower_and_compile = lower_and_compile
    f.__code__ = _hook.__code__
  _state["enabled"] = True


def uninstall() -> None:
  _state["enabled"] = False


def is_installed() -> bool: return _state["enabled"]


def stats() -> dict[str, int]:
  """Kernels found on disk and kernels stored, in this process (the CPU device's queue programs apart)."""
  return {"hits": _state["hits"], "stored": _state["stored"]}


def queue_program_stats() -> dict[str, int]:
  """The CPU device's queue programs found on disk and lowered, in this process."""
  return {"hits": _state["queue_hits"], "lowered": _state["queue_lowered"]}
