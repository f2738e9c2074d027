"""BEAM you can afford: a time budget, live progress, and a search cache you can keep and share.

tinygrad's BEAM (`BEAM=N` for every kernel, `JITBEAM=N` for the kernels inside TinyJit functions)
times up to N candidate optimizations per step for each kernel and keeps the fastest; the result is
cached in tinygrad's own database (CACHEDB, ~/.cache/tinygrad/cache.db), so the search is paid once.
This module wraps that search without replacing it:

  budget    `--beam-minutes M` (every script; or BEAM_MINUTES=M) caps the search time of the run. When
            the budget is spent, kernels not yet searched keep the heuristic's choice (and are not
            cached, so a later run with more budget searches them). A kernel's search that runs out
            of budget stops at its next candidate and that kernel keeps the heuristic's choice too.
  floor     BEAM_MIN_US=F leaves kernels the heuristic already runs in under F microseconds unsearched: a
            search takes seconds per kernel (8.6 s on an H200 for a U-Net's) and a 5 µs kernel has a few µs
            to gain, so the search time goes to the kernels that hold the step's time. Each kernel's
            heuristic time is measured once (a compile and three runs) and kept in the cache
            (table orin_beam_heuristic_us, keyed by the kernel, the GPU target and the heuristic's
            options), so a rerun decides at once. 0 (the default) searches every kernel.
            H200, the audio CNN's train step, a 2-minute budget: 6.97 ms without BEAM, 6.61 ms searched
            without the floor, 6.20 ms with BEAM_MIN_US=20 (audio-ml/README.md has the commands).
  progress  a bar: kernels searched of those this compile needs, elapsed time, and the speedup of the
            searched kernels over the heuristic's choice (both timed by tinygrad's own timer); one
            line at the end: "BEAM searched N kernels in S s (X from cache) ..." or "BEAM from cache (N kernels)".
  TF32      tinygrad 0.14.0 leaves ALLOW_TF32 out of the cache key, so kernels found with TF32 tensor
            cores were reused by fp32 runs (and failed: "no tensor core available"). Here a TF32 run
            reads and writes its own table (beam_search_tf32), so the two never mix.
  keep      python3 -m common.beam list                  what is cached, per device and project
            python3 -m common.beam export orin-beam.json  this device's searched kernels, to one file
            python3 -m common.beam import orin-beam.json  merge a file into the local cache (one made
                                                          on another device, GPU arch or tinygrad
                                                          version is refused in one line)

The hooks live on tinygrad's module attributes (search.beam_search, realize.lower_and_compile,
search.diskcache_get/put); BEAM compiles in the main process, so the hooks see every search.
"""
from __future__ import annotations
import base64, io, json, os, pickle, sys, time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "orin-tinygrad-beam/1"
TABLE, TF32_TABLE, PROJECTS_TABLE = "beam_search", "beam_search_tf32", "orin_beam_projects"
HEURISTIC_US_TABLE = "orin_beam_heuristic_us"


class BudgetSpent(Exception):
  """Raised inside a kernel's search when the run's budget runs out."""


@dataclass
class SearchState:
  budget_s: float | None = None        # None: no budget
  project: str = ""
  spent_s: float = 0.0
  searched: int = 0                    # kernels BEAM searched this run
  cached: int = 0                      # kernels whose choice came from the cache
  heuristic: int = 0                   # kernels left to the heuristic because the budget was spent
  small: int = 0                       # kernels left to the heuristic because they already run under the floor
  floor_us: float = 0.0                # BEAM_MIN_US
  floor_timed: int = 0                 # kernels whose heuristic time was measured this run (not found in the cache)
  base_s: float = 0.0                  # summed time of searched kernels with the heuristic's opts
  best_s: float = 0.0                  # ... and with BEAM's
  total: int = 0                       # kernels the current compile will search or look up
  bar: Any = None
  deadline: float | None = None        # perf_counter() at which the current kernel's search must stop
  installed: bool = False
  shown: str | None = None             # the summary a bench table already printed: the exit line does not repeat it
  events: list[str] = field(default_factory=list)
  kernels: list[tuple[str, str, str, float, float]] = field(default_factory=list)   # name, heuristic opts, BEAM opts, seconds, seconds

  @property
  def speedup(self) -> float: return self.base_s / self.best_s if self.best_s > 0 else 1.0

  def summary(self) -> str:
    small = f", {self.small} under {self.floor_us:g} µs left to the heuristic" if self.small else ""
    if self.searched == 0 and self.heuristic == 0 and self.cached == 0 and self.small:
      return f"BEAM searched no kernel: {self.small} run under {self.floor_us:g} µs and keep the heuristic's choice"
    if self.searched == 0 and self.heuristic == 0: return f"BEAM from cache ({self.cached} kernels{small})"
    left = f", {self.heuristic} left to the heuristic: budget of {self.budget_s / 60:g} min spent" if self.heuristic else ""
    left = small + left
    gain = f"; the searched kernels run {self.speedup:.2f}x as fast as the heuristic's" if self.best_s > 0 else ""
    return f"BEAM searched {self.searched} kernels in {self.spent_s:.1f} s ({self.cached} from cache{left}){gain}"


STATE = SearchState()


def beam_level() -> int:
  return max(int(os.environ.get("BEAM", "0") or 0), int(os.environ.get("JITBEAM", "0") or 0))


def min_us() -> float:
  """BEAM_MIN_US: kernels faster than this with the heuristic's choice are not searched (0: search every kernel)."""
  text = os.environ.get("BEAM_MIN_US", "0") or "0"
  try: value = float(text)
  except ValueError: value = -1.0
  if not value >= 0 or value == float("inf"):
    from common.cli import UserError
    raise UserError(f"BEAM_MIN_US={text!r}: give microseconds, 0 or more (e.g. 20)")
  return value


def tf32() -> bool:
  from tinygrad.helpers import ALLOW_TF32
  return bool(ALLOW_TF32.value)


def table() -> str: return TF32_TABLE if tf32() else TABLE


def install(project: str = "", minutes: float | None = None) -> SearchState:
  """Hook tinygrad's BEAM (once per process). `minutes` is the search budget (None: unlimited)."""
  STATE.project = project or STATE.project
  if minutes is None and os.environ.get("BEAM_MINUTES"): minutes = float(os.environ["BEAM_MINUTES"])
  STATE.budget_s = None if minutes is None else minutes * 60
  STATE.floor_us = min_us()
  if STATE.installed: return STATE
  from tinygrad.codegen.opt import search
  from tinygrad.engine import realize
  from tinygrad import helpers
  search.diskcache_get = lambda t, key: helpers.diskcache_get(table() if t == TABLE else t, key)
  search.diskcache_put = lambda t, key, val, prepickled=False: _put(helpers, t, key, val, prepickled)
  original_search, original_lower, original_time = search.beam_search, realize.lower_and_compile, search._time_program
  search._time_program = lambda *a, **k: _time_checked(original_time, *a, **k)
  search.beam_search = lambda s, rawbufs, var_vals, amt, *a, **k: _search(original_search, s, rawbufs, var_vals, amt, *a, **k)
  realize.lower_and_compile = lambda linear: _lower(original_lower, linear)
  import atexit
  atexit.register(_report)
  STATE.installed = True
  return STATE


def _put(helpers, t: str, key: dict, val: Any, prepickled: bool) -> Any:
  if t != TABLE: return helpers.diskcache_put(t, key, val, prepickled)
  helpers.diskcache_put(table(), key, val, prepickled)
  if STATE.project: helpers.diskcache_put(PROJECTS_TABLE, {"ast": key["ast"], "device": key["device"], "project": STATE.project}, True)
  return val


def _lower(original, linear):
  """Count the kernels this compile will hand to BEAM, for the progress bar's total."""
  from tinygrad.uop.ops import Ops
  n = sum(1 for c in linear.toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK and getattr(c.src[0].arg, "beam", 0))
  if n:
    from common import progress
    STATE.total += n
    if STATE.bar is None: STATE.bar = progress(total=STATE.total, desc="BEAM")
    else: STATE.bar.t = STATE.total
  try: return original(linear)
  finally:
    if STATE.bar is not None and STATE.bar.n >= STATE.bar.t:
      STATE.bar.update(0, close=True)
      STATE.bar = None


def _search(original, s, rawbufs, var_vals, amt, *args, **kwargs):
  from tinygrad.codegen.opt import search
  from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
  key = {"ast": s.ast.key, "amt": amt, "allow_test_size": args[0] if args else kwargs.get("allow_test_size", True),
         "device": s.ren.target.device, "suffix": s.ren.suffix}
  if search.diskcache_get(TABLE, key) is not None:
    STATE.cached += 1
    _advance()
    return original(s, rawbufs, var_vals, amt, *args, **kwargs)
  left = None if STATE.budget_s is None else STATE.budget_s - STATE.spent_s
  if left is not None and left <= 0:
    STATE.heuristic += 1
    _advance()
    return hand_coded_optimizations(s)
  t0 = time.perf_counter()
  if STATE.floor_us > 0 and (us := _heuristic_us(s, rawbufs, var_vals, hand_coded_optimizations)) is not None and us < STATE.floor_us:
    STATE.spent_s += time.perf_counter() - t0
    STATE.small += 1
    _advance()
    return hand_coded_optimizations(s)
  STATE.deadline = None if left is None else t0 + left
  try:
    found = original(s, rawbufs, var_vals, amt, *args, **kwargs)
  except BudgetSpent:
    STATE.spent_s += time.perf_counter() - t0
    STATE.heuristic += 1
    _advance()
    return hand_coded_optimizations(s)
  finally:
    STATE.deadline = None
  STATE.spent_s += time.perf_counter() - t0
  STATE.searched += 1
  _measure(s, found, rawbufs, var_vals, hand_coded_optimizations)
  _advance()
  return found


def _heuristic_us(s, rawbufs, var_vals, heuristic) -> float | None:
  """The kernel's time with the heuristic's choice, in µs (min of 3 runs at full size), from the cache or measured
  and kept there; None if it cannot be timed (the kernel is then searched as usual)."""
  from tinygrad import helpers
  chosen = heuristic(s.copy())
  # the heuristic's opts (the backend's patches change them) and the target with its arch: an H200's time never
  # decides for an Orin, nor a time under one patch setting for another
  key = {"ast": s.ast.key, "target": repr(s.ren.target), "suffix": s.ren.suffix, "tf32": int(tf32()), "opts": _opts(chosen)}
  if (us := helpers.diskcache_get(HEURISTIC_US_TABLE, key)) is not None: return us
  try:
    if (seconds := _time_schedule(chosen, rawbufs, var_vals)) is None: return None
    us = seconds * 1e6
    STATE.floor_timed += 1
  except Exception as e:    # a kernel that cannot be timed here is searched, as without a floor
    STATE.events.append(f"heuristic timing failed: {type(e).__name__}")
    return None
  helpers.diskcache_put(HEURISTIC_US_TABLE, key, us)
  return us


def _time_checked(original, *args, **kwargs):
  """BEAM times every candidate through here, in the main process: the place to stop a search whose
  budget ran out (BudgetSpent is not a RuntimeError, so the search does not swallow it)."""
  if STATE.deadline is not None and time.perf_counter() > STATE.deadline: raise BudgetSpent()
  return original(*args, **kwargs)


def _time_schedule(sched, rawbufs, var_vals) -> float | None:
  """One optimized kernel's time in seconds with tinygrad's own timer (min of 3 runs at full size); None: no program."""
  from tinygrad.codegen.opt import search
  compiled = search._try_compile((0, sched))[1]
  if compiled is None: return None
  return min(search._time_program(compiled[0], var_vals, search._ensure_buffer_alloc(rawbufs), allow_test_size=False))


def _measure(s, found, rawbufs, var_vals, heuristic) -> None:
  """Time the heuristic's and BEAM's version of one kernel (for the speedup and BEAM_REPORT)."""
  try:
    times, scheds = [], (heuristic(s.copy()), found)
    for sched in scheds:
      if (t := _time_schedule(sched, rawbufs, var_vals)) is None: return
      times.append(t)
    STATE.base_s += times[0]
    STATE.best_s += times[1]
    STATE.kernels.append((_plain(s.copy().get_optimized_ast().arg.name), _opts(scheds[0]), _opts(scheds[1]), times[0], times[1]))
    if os.environ.get("BEAM_REPORT"):       # as it is found, so that a run stopped by a time limit keeps what it learned
      from common import log
      log("BEAM kernel " + _row(STATE.kernels[-1]))
  except Exception as e:    # timing is for the report only: never let it break the run
    STATE.events.append(f"timing failed: {type(e).__name__}")


def _plain(text: str) -> str:
  import re
  return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _opts(sched) -> str: return " ".join(f"{o.op.name}({o.axis},{o.arg})" for o in sched.applied_opts)


def kernel_report() -> str:
  """Per searched kernel: the heuristic's opts and time, BEAM's opts and time (BEAM_REPORT=1: a row as each is searched, the table at exit)."""
  rows = ["| kernel | heuristic opts | µs | BEAM opts | µs | speedup |", "|---|---|---:|---|---:|---:|"]
  return "\n".join(rows + [_row(k) for k in STATE.kernels])


def _row(kernel: tuple[str, str, str, float, float]) -> str:
  name, h, b, th, tb = kernel
  return f"| {name} | {h} | {th * 1e6:.1f} | {b} | {tb * 1e6:.1f} | {th / tb if tb > 0 else 0:.2f}x |"


def _advance() -> None:
  done = STATE.searched + STATE.cached + STATE.heuristic + STATE.small
  small = f" ({STATE.small} under {STATE.floor_us:g} µs)" if STATE.small else ""
  line = f"BEAM {done}/{STATE.total} kernels{small}, {STATE.spent_s:.1f} s searching, searched kernels {STATE.speedup:.2f}x the heuristic's speed"
  if STATE.bar is None or STATE.bar.disable:
    from common import log
    log(line)                                # no terminal (a log file, a test): one plain line per kernel
  if STATE.bar is not None:
    STATE.bar.set_description(f"BEAM {STATE.spent_s:.0f}s search, {STATE.speedup:.2f}x")
    STATE.bar.update(1)


def _report() -> None:
  if (STATE.searched or STATE.cached or STATE.heuristic or STATE.small) and STATE.summary() != STATE.shown:
    print(STATE.summary(), file=sys.stderr, flush=True)
  if os.environ.get("BEAM_REPORT") and STATE.kernels: print(kernel_report(), file=sys.stderr, flush=True)


# ---- keeping and sharing the cache ------------------------------------------------------------

def _identity(device: str | None = None) -> dict[str, str]:
  from tinygrad import Device
  from tinygrad.helpers import VERSION
  from common.device import tinygrad_version
  dev = Device[device or Device.DEFAULT]
  return {"tinygrad": tinygrad_version(), "cache_version": str(VERSION), "device": dev.device.split(":")[0],
          "arch": str(getattr(dev.renderer, "arch", "") or getattr(dev, "arch", "") or "-")}


def _rows(cur, name: str, device: str | None = None) -> list[dict[str, Any]]:
  from tinygrad.helpers import VERSION
  try: res = cur.execute(f"SELECT * FROM '{name}_{VERSION}'" + (" WHERE device=?" if device else ""), (device,) if device else ())
  except Exception: return []
  cols = [d[0] for d in res.description]
  return [dict(zip(cols, row)) for row in res.fetchall()]


def export_cache(path: str) -> int:
  from tinygrad.helpers import db_connection
  from common.files import save_json
  ident = _identity()
  cur = db_connection().cursor()
  projects: dict[str, list[str]] = {}
  for r in _rows(cur, PROJECTS_TABLE, ident["device"]): projects.setdefault(r["ast"], []).append(r["project"])
  entries = []
  for name in (TABLE, TF32_TABLE):
    for r in _rows(cur, name, ident["device"]):
      val = r.pop("val")
      entries.append({"table": name, "key": {k: _encode(v) for k, v in r.items()}, "val": base64.b64encode(val).decode(),
                      "projects": sorted(projects.get(r["ast"], []))})
  save_json({"schema": SCHEMA, **ident, "entries": entries}, path)
  return len(entries)


def _encode(v: Any) -> Any: return {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
def _decode(v: Any) -> Any: return base64.b64decode(v["b64"]) if isinstance(v, dict) and "b64" in v else v


class _OptsOnly(pickle.Unpickler):
  """A cache entry is a list of tinygrad Opt values: refuse anything else a file might carry."""
  def find_class(self, module: str, name: str):
    if module == "tinygrad.codegen.opt" and name in ("Opt", "OptOps"): return super().find_class(module, name)
    raise pickle.UnpicklingError(f"{module}.{name} is not a kernel optimization")


def import_cache(path: str) -> int:
  from common.cli import UserError
  from tinygrad import helpers
  try: doc = json.loads(Path(path).read_text())
  except (OSError, ValueError) as e: raise UserError(f"{path}: not a BEAM cache file ({type(e).__name__})")
  if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
    raise UserError(f"{path}: not a BEAM cache file (schema {doc.get('schema') if isinstance(doc, dict) else None!r}, expected {SCHEMA!r})")
  here = _identity()
  for k in ("device", "arch", "tinygrad", "cache_version"):
    if str(doc.get(k)) != here[k]: raise UserError(f"{path} is for {k} {doc.get(k)}, but this run's device has {here[k]}: refused")
  n = 0
  for e in doc.get("entries", []):
    try: val = _OptsOnly(io.BytesIO(base64.b64decode(e["val"]))).load()
    except Exception as err: raise UserError(f"{path}: entry {n} is not a list of kernel optimizations ({err})")
    if e.get("table") not in (TABLE, TF32_TABLE): raise UserError(f"{path}: entry {n} names table {e.get('table')!r}")
    key = {k: _decode(v) for k, v in e["key"].items()}
    helpers.diskcache_put(e["table"], key, val)
    for proj in e.get("projects", []):
      helpers.diskcache_put(PROJECTS_TABLE, {"ast": key["ast"], "device": key["device"], "project": proj}, True)
    n += 1
  return n


def list_cache() -> list[tuple[str, str, str, int]]:
  """(device, table, project, kernels) for everything cached."""
  from tinygrad.helpers import db_connection
  cur = db_connection().cursor()
  tagged: dict[tuple[str, str], list[str]] = {}
  for r in _rows(cur, PROJECTS_TABLE): tagged.setdefault((r["ast"], r["device"]), []).append(r["project"])
  counts: dict[tuple[str, str, str], int] = {}
  for name in (TABLE, TF32_TABLE):
    for r in _rows(cur, name):
      for proj in tagged.get((r["ast"], r["device"]), ["(untagged)"]):
        counts[(r["device"], name, proj)] = counts.get((r["device"], name, proj), 0) + 1
  return sorted((d, t, p, n) for (d, t, p), n in counts.items())


def main(argv: list[str] | None = None) -> int:
  from common.cli import ArgumentParser, run_main, check_writable, UserError
  p = ArgumentParser(prog="python3 -m common.beam", description="Keep and share tinygrad's BEAM search cache.")
  sub = p.add_subparsers(dest="cmd", required=True)
  sub.add_parser("list", help="what is cached, per device, table and project")
  ex = sub.add_parser("export", help="write this device's searched kernels to one file")
  ex.add_argument("path")
  im = sub.add_parser("import", help="merge a file written by export into the local cache (for the default device: DEV=..., NV=1)")
  im.add_argument("path")
  args = p.parse_args(argv)
  if args.cmd == "export":
    try: check_writable(args.path, "export")
    except UserError as e: p.error(str(e))

  def run() -> int:
    from tinygrad.helpers import CACHEDB
    if args.cmd == "list":
      rows = list_cache()
      print(f"cache {CACHEDB}")
      print("| device | table | project | kernels |\n|---|---|---|---:|")
      for d, t, proj, n in rows: print(f"| {d} | {t} | {proj} | {n} |")
      if not rows: print("(empty)")
    elif args.cmd == "export": print(f"exported {export_cache(args.path)} kernels to {args.path}")
    else: print(f"imported {import_cache(args.path)} kernels into {CACHEDB}")
    return 0
  return run_main(run, open_device=args.cmd != "list")


if __name__ == "__main__":
  sys.exit(main())
