"""Run one script's `--bench --json` on several backends and put the results side by side.

    python3 -m common.compare audio-ml/audio_classify.py --backends NV,CUDA,CPU
    python3 -m common.compare stereo/depth_map.py --backends NV,CUDA -- --quick

Each backend runs in its own process (tinygrad settles its device once per process) with DEV set to
that backend. A backend that cannot open is skipped with the reason it gave. The table shows each
case's headline metric per backend and the ratio of every backend to the first one that ran:
for a throughput higher is better, for a latency lower is better, and the ratio column always reads
"how many times faster than the first backend".
"""
from __future__ import annotations
import json, os, subprocess, sys, tempfile
from pathlib import Path

from common.bench import validate, fmt
from common.cli import ArgumentParser, UserError, positive_float, run_main, check_writable

PROBE = "import sys, common; from common.device import open_device; sys.exit(common.run_main(lambda: open_device() and 0))"


def probe(backend: str, env: dict[str, str], timeout: float) -> str | None:
  """None when `backend` opens; otherwise the one-line reason."""
  try:
    r = subprocess.run([sys.executable, "-c", PROBE], env={**env, "DEV": backend}, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return f"did not open within {timeout:.0f} s"
  if r.returncode == 0: return None
  lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
  return lines[-1].removeprefix("error: ") if lines else f"exit status {r.returncode}"


def run_backend(script: str, backend: str, extra: list[str], env: dict[str, str], timeout: float) -> tuple[list[dict] | None, str]:
  with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "bench.json"
    cmd = [sys.executable, script, "--bench", "--json", str(out), "--out", str(Path(tmp) / "out"), *extra]
    try:
      r = subprocess.run(cmd, env={**env, "DEV": backend}, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
      return None, f"timed out after {timeout:.0f} s"
    if r.returncode != 0 or not out.exists():
      lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
      return None, (lines[-1] if lines else f"exit status {r.returncode}")
    try:
      return validate(json.loads(out.read_text())), "ok"
    except (ValueError, json.JSONDecodeError) as e:
      return None, f"wrote an invalid bench JSON: {e}"


def speedup(base: dict, other: dict) -> float | None:
  """How many times faster `other` is than `base` on the same case."""
  if base["unit"] != other["unit"] or not base["value"] or not other["value"]: return None
  return other["value"] / base["value"] if base["metric"] == "throughput" else base["value"] / other["value"]


def comparison_table(results: dict[str, list[dict]]) -> str:
  backends = list(results)
  cases: list[str] = []
  for recs in results.values():
    for r in recs:
      if r["case"] not in cases: cases.append(r["case"])
  by = {b: {r["case"]: r for r in recs} for b, recs in results.items()}
  base = backends[0]
  head = ["case", "unit"] + backends + [f"{b} vs {base}" for b in backends[1:]]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
  for c in cases:
    first = next(by[b][c] for b in backends if c in by[b])
    row = [c, first["unit"]] + [fmt(by[b][c]["value"]) if c in by[b] else "-" for b in backends]
    for b in backends[1:]:
      s = speedup(by[base][c], by[b][c]) if c in by[base] and c in by[b] else None
      row.append(f"{s:.2f}× faster" if s and s >= 1 else (f"{1 / s:.2f}× slower" if s else "-"))
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  extra: list[str] = []
  if "--" in argv: argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  p = ArgumentParser(prog="python3 -m common.compare", description="Run a script's --bench on several backends and compare.")
  p.add_argument("script", help="path of a project script that supports --bench --json")
  p.add_argument("--backends", default="NV,CUDA,CPU", help="comma-separated DEV values, the first is the baseline")
  p.add_argument("--json", metavar="PATH", default=None, help="also write {backend: records} here")
  p.add_argument("--timeout", type=positive_float, default=1800, help="seconds allowed for each backend's run")
  args = p.parse_args(argv)
  if args.json:
    try: check_writable(args.json, "--json")
    except UserError as e: p.error(str(e))

  def run() -> int:
    if not Path(args.script).is_file(): raise UserError(f"script {args.script}: no such file")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends: raise UserError("--backends is empty")
    env = {k: v for k, v in os.environ.items() if k not in ("DEV", "NV", "CUDA", "CPU")}
    results: dict[str, list[dict]] = {}
    for b in backends:
      reason = probe(b, env, timeout=120)
      if reason is not None:
        print(f"skipped {b}: {reason}")
        continue
      print(f"running {args.script} --bench on DEV={b} ...", flush=True)
      recs, status = run_backend(args.script, b, extra, env, args.timeout)
      if recs is None:
        print(f"skipped {b}: the run failed: {status}")
        continue
      results[b] = recs
    if not results: raise UserError(f"no backend could run {args.script} (tried {', '.join(backends)})")
    print()
    print(comparison_table(results))
    if args.json:
      from common.files import save_json
      save_json(results, args.json)
    return 0
  return run_main(run, open_device=False)   # the runs open their own devices, in child processes


if __name__ == "__main__":
  sys.exit(main())
