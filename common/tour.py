"""A short tour: the device report, the microbenchmarks, then every project that exists, each
writing its artifacts under out/<project>/.

    python3 -m common.tour            # --quick settings: a few minutes on a laptop CPU
    python3 -m common.tour --full     # each project's default demo (minutes each on a 2-core CPU)
"""
from __future__ import annotations
import os, subprocess, sys, time
from pathlib import Path

from common.cli import ArgumentParser, run_main

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = [("style-transfer", "style_transfer.py"), ("audio-ml", "audio_classify.py"),
            ("reinforcement-learning", "rl_agents.py"), ("generative", "generative_models.py"),
            ("edge-deploy", "edge_optimize.py"), ("stereo", "depth_map.py")]


def main(argv: list[str] | None = None) -> int:
  p = ArgumentParser(prog="python3 -m common.tour", description=__doc__.strip().splitlines()[0])
  p.add_argument("--full", action="store_true", help="run each project's default demo instead of its --quick setting")
  p.add_argument("--out", default="out", help="root folder for the artifacts")
  args = p.parse_args(argv)

  def run() -> int:
    from common.device import report
    from common.microbench import run_microbenchmarks
    from common.files import out_dir
    root = out_dir(args.out)
    print("== device")
    rows = report()
    w = max(len(k) for k, _ in rows)
    for k, v in rows: print(f"{k:<{w}}  {v}")
    run_microbenchmarks(quick=not args.full, json_path=str(root / "device-bench.json"))
    summary = []
    for project, script in PROJECTS:
      path = ROOT / project / script
      if not path.is_file():
        summary.append((project, "not built yet", 0.0))
        continue
      cmd = [sys.executable, str(path), "--out", str(root / project)] + ([] if args.full else ["--quick"])
      print(f"\n== {project}: {' '.join(cmd[1:])}", flush=True)
      t0 = time.perf_counter()
      rc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy()).returncode
      summary.append((project, {0: "PASS", 1: "FAIL (success check)"}.get(rc, f"error (exit {rc})"), time.perf_counter() - t0))
    print("\n| project | result | seconds | artifacts |\n|---|---|---:|---|")
    for project, status, secs in summary:
      print(f"| {project} | {status} | {secs:.0f} | {root / project if secs else '-'} |")
    return 0 if all(s in ("PASS", "not built yet") for _, s, _ in summary) else 1
  return run_main(run)


if __name__ == "__main__":
  sys.exit(main())
