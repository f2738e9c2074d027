"""The benchmark harness every `--bench` uses.

Timing GPU code honestly takes three rules:
  1. Device work is asynchronous: synchronize the device before starting and before stopping the clock.
  2. The first calls are different: they compile kernels, TinyJit captures on the 2nd call and
     replays from the 3rd, and BEAM/JITBEAM search runs then. Those calls are timed separately
     ("warm-up") and never mixed into the steady state.
  3. One number hides the spread: report the median and the 10th/90th/99th percentiles.

    bench = Bench("audio-ml")
    bench.run("log-mel b=64", lambda: logmel(x).realize(), rate=(64, "clips/s"))
    bench.print()                 # markdown table on stdout
    bench.write_json("bench.json")  # one record per case, for common.compare

A record: project, case, device, renderer, tinygrad, beam, jitbeam, metric, value, unit, samples_ms,
median_ms, p10_ms, p90_ms, p99_ms, warmup_ms (+ extra fields a project adds, e.g. peak memory).
"""
from __future__ import annotations
import math, os, platform, time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from common.device import describe_device, synchronize, tinygrad_version

SCHEMA = "orin-tinygrad-bench/1"
REQUIRED = {"project": str, "case": str, "device": str, "renderer": str, "tinygrad": str, "beam": int, "jitbeam": int,
            "metric": str, "value": (int, float), "unit": str, "samples_ms": list, "median_ms": (int, float),
            "p10_ms": (int, float), "p90_ms": (int, float), "p99_ms": (int, float), "warmup_ms": list}


def percentile(samples: Sequence[float], q: float) -> float:
  """q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
  if not samples: raise ValueError("percentile of no samples")
  s = sorted(samples)
  pos = (len(s) - 1) * q / 100.0
  lo, hi = math.floor(pos), math.ceil(pos)
  return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Timing:
  warmup_s: list[float]     # each warm-up call: compile, JIT capture, BEAM search
  samples_s: list[float]    # steady state, one entry per call

  @property
  def median(self) -> float: return percentile(self.samples_s, 50)
  def pct(self, q: float) -> float: return percentile(self.samples_s, q)


def default_sync() -> Callable[[], None]:
  return synchronize


def time_fn(fn: Callable[[], Any], *, warmup: int = 3, iters: int = 20, min_seconds: float = 0.0,
            max_seconds: float | None = None, sync: Callable[[], None] | None = None) -> Timing:
  """Call `fn` `warmup` times, then at least `iters` times (more until `min_seconds` of steady
  state have passed, at most 10 000), each call bracketed by device synchronization.
  `max_seconds` stops the steady state early (after at least 3 samples) for slow cases.
  `fn` must force its work (realize / numpy()); a TinyJit'd function realizes its outputs."""
  sync = sync or default_sync()
  clock = time.perf_counter
  warm: list[float] = []
  sync()
  for _ in range(warmup):
    t0 = clock()
    fn()
    sync()
    warm.append(clock() - t0)
  samples: list[float] = []
  start = clock()
  while True:
    t0 = clock()
    fn()
    sync()
    samples.append(clock() - t0)
    elapsed = clock() - start
    if max_seconds is not None and elapsed > max_seconds and len(samples) >= 3: break
    if len(samples) >= iters and elapsed >= min_seconds: break
    if len(samples) >= 10_000: break
  return Timing(warm, samples)


def _env_int(name: str) -> int:
  try: return int(os.environ.get(name, "0") or 0)
  except ValueError: return 0


def _allow_tf32() -> int:
  """tinygrad's ALLOW_TF32 now: the environment's value, or a `with Context(ALLOW_TF32=...)` around the timed case."""
  from tinygrad.helpers import ALLOW_TF32
  return int(ALLOW_TF32.value)


@dataclass
class Bench:
  """Collects cases for one project on one device and prints/writes them."""
  project: str
  device: str | None = None       # filled from the default device unless given (e.g. "torch:cuda")
  renderer: str | None = None
  records: list[dict[str, Any]] = field(default_factory=list)

  def _device_fields(self) -> dict[str, str]:
    if self.device is None or self.renderer is None:
      d = describe_device()
      self.device = self.device or d["device"]
      self.renderer = self.renderer or d["renderer"]
    return {"device": self.device, "renderer": self.renderer, "tinygrad": tinygrad_version()}

  def add(self, case: str, timing: Timing, *, rate: tuple[float, str] | None = None, **extra: Any) -> dict[str, Any]:
    """Record a timed case. `rate=(amount per call, unit)` makes the headline metric a throughput
    (amount / median time, e.g. (64, "clips/s") or (flops / 1e9, "GFLOP/s")); otherwise it is the
    median latency in ms."""
    med = timing.median
    if rate is not None:
      amount, unit = rate
      metric, value = "throughput", amount / med if med > 0 else float("inf")
    else:
      metric, value, unit = "latency", med * 1e3, "ms"
    rec: dict[str, Any] = {"project": self.project, "case": case, **self._device_fields(),
                           "beam": _env_int("BEAM"), "jitbeam": _env_int("JITBEAM"), "allow_tf32": _allow_tf32(),
                           "metric": metric, "value": value, "unit": unit,
                           "median_ms": med * 1e3, "p10_ms": timing.pct(10) * 1e3, "p90_ms": timing.pct(90) * 1e3,
                           "p99_ms": timing.pct(99) * 1e3, "samples_ms": [s * 1e3 for s in timing.samples_s],
                           "warmup_ms": [s * 1e3 for s in timing.warmup_s], "host": platform.node(), "beam_search": beam_summary(), **extra}
    self.records.append(rec)
    return rec

  def run(self, case: str, fn: Callable[[], Any], *, rate: tuple[float, str] | None = None, warmup: int = 3,
          iters: int = 20, min_seconds: float = 0.0, max_seconds: float | None = None,
          sync: Callable[[], None] | None = None, **extra: Any) -> dict[str, Any]:
    timing = time_fn(fn, warmup=warmup, iters=iters, min_seconds=min_seconds, max_seconds=max_seconds, sync=sync)
    return self.add(case, timing, rate=rate, **extra)

  def table(self) -> str:
    return markdown_table(self.records)

  def print(self, title: str | None = None) -> None:
    dev = self.records[0]["device"] if self.records else (self.device or "?")
    beam = f"BEAM={_env_int('BEAM')} JITBEAM={_env_int('JITBEAM')}"
    print(f"\n### {title or self.project} on {dev} ({self.records[0]['renderer'] if self.records else ''}, {beam})\n")
    print(self.table())
    if (search := beam_summary()) is not None:
      from common import beam
      print(f"\n{search}")
      beam.STATE.shown = search

  def write_json(self, path: str | os.PathLike | None) -> None:
    """Write the records (atomically) and say where; no path, nothing written."""
    if not path: return
    from common.files import save_json
    save_json({"schema": SCHEMA, "records": self.records}, path)
    print(f"wrote {path}")


def beam_summary() -> str | None:
  """What BEAM did in this run so far ("BEAM from cache (N kernels)" / "BEAM searched N kernels in S s ..."),
  when common.beam watches the search; None otherwise."""
  from common import beam
  return beam.STATE.summary() if beam.STATE.installed and beam.beam_level() > 0 else None


TF32_MODES = ("default", "on", "off")


def jit_kernel_count(jit: Any) -> int:
  """Kernels one replay of a captured TinyJit launches, counting each kernel inside a GPU graph.
  (GlobalCounters.kernel_count counts a CUDA graph as one launch, so on a GPU it says "2" for a step of
  hundreds of kernels.)"""
  from tinygrad.uop.ops import Ops
  n = 0
  for call in jit.captured._linear.src:
    ast = call.src[0]
    if ast.op is Ops.CUSTOM_FUNCTION and ast.arg == "graph": n += sum(1 for c in ast.src[0].src if c.src[0].op is Ops.PROGRAM)
    elif ast.op is Ops.PROGRAM: n += 1
  return n


def torch_tf32(torch: Any, mode: str) -> str:
  """Set PyTorch's TF32 switches for a reference run and say what they are. PyTorch's defaults let cuDNN
  convolutions use TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation) but not matmuls; tinygrad
  uses them only with ALLOW_TF32=1. Comparing like with like means choosing the same on both sides."""
  if mode != "default":
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = (mode == "on")
  return f"cudnn={int(torch.backends.cudnn.allow_tf32)} matmul={int(torch.backends.cuda.matmul.allow_tf32)}"


def fmt(v: float) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)): return "-"
  a = abs(v)
  return f"{v:.3g}" if a < 1000 else f"{v:,.0f}"


def markdown_table(records: list[dict[str, Any]]) -> str:
  head = "| case | median ms | p10 ms | p90 ms | p99 ms | warm-up s | result |\n|---|---:|---:|---:|---:|---:|---:|"
  rows = []
  for r in records:
    result = f"{fmt(r['value'])} {r['unit']}" if r["metric"] != "latency" else "-"
    warm = sum(r["warmup_ms"]) / 1e3
    rows.append(f"| {r['case']} | {fmt(r['median_ms'])} | {fmt(r['p10_ms'])} | {fmt(r['p90_ms'])} | {fmt(r['p99_ms'])} | {warm:.2f} | {result} |")
  return "\n".join([head] + rows)


def validate(doc: Any) -> list[dict[str, Any]]:
  """Check a bench JSON document against the schema; return its records or raise ValueError."""
  if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("records"), list):
    raise ValueError(f"not a bench document (expected {{'schema': {SCHEMA!r}, 'records': [...]}})")
  for i, r in enumerate(doc["records"]):
    for key, typ in REQUIRED.items():
      if key not in r: raise ValueError(f"record {i}: missing {key!r}")
      if not isinstance(r[key], typ) or isinstance(r[key], bool): raise ValueError(f"record {i}: {key!r} has type {type(r[key]).__name__}")
    if not r["samples_ms"]: raise ValueError(f"record {i}: no samples")
    if not r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"]: raise ValueError(f"record {i}: percentiles out of order")
  return doc["records"]
