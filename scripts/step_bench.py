"""The convolutional training steps of every project, in tinygrad and in its PyTorch twin, one after
another in one run, and the ratio of the two: the benchmark behind docs/results.md's step table.

    step                                    tinygrad side                                  PyTorch side
    DDPM U-Net train step, b=128, width 64  generative_models.py --bench --model diffusion  generative/torch_reference.py --model diffusion
    conv autoencoder train step, b=128      generative_models.py --bench --model ae         generative/torch_reference.py --model autoencoder
    VGG-19 512 px Adam step                 style_transfer.py --bench (vgg19, adam)         style-transfer/torch_reference.py --sizes 512
    audio CNN train step, b=64              audio_classify.py --bench --cases train         audio-ml/torch_reference.py --cases train

Each side runs as its own process (tinygrad and PyTorch never share a GPU context), its `--json` records
are matched by case name, and the table gives both medians and tinygrad / PyTorch (below 1: tinygrad is
faster). PyTorch runs fp32 with TF32 off (`--tf32 off`), tinygrad fp32 without ALLOW_TF32: the same
arithmetic. `--compile` adds PyTorch's torch.compile figures (not for VGG); JITBEAM=N in the environment searches the
tinygrad side's kernels (and says so in the table's title).

    DEV=CUDA python3 scripts/step_bench.py --json out/steps.json          # all four, about 5 minutes on an H200
    DEV=CUDA python3 scripts/step_bench.py --steps unet,ae --compile
    DEV=CUDA python3 scripts/step_bench.py --half                         # mixed precision on both sides
    python3 scripts/step_bench.py --steps ae --quick                      # CPU: the b=32 cases only

torch is optional: without it the PyTorch column is empty and the table says why.
"""
from __future__ import annotations
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.cli import ArgumentParser, check_writable, choice_list, run_main  # noqa: E402
from common.files import save_json  # noqa: E402

# name -> (tinygrad script and flags, PyTorch script and flags, the case both time, its label in the table)
STEPS = {
  "unet": (["generative/generative_models.py", "--bench", "--model", "diffusion", "--width", "64", "--batch", "{b}"],
           ["generative/torch_reference.py", "--model", "diffusion", "--width", "64", "--batch", "{b}"],
           "DDPM train step b={b} 1x28x28 width 64{half}", "DDPM U-Net train step, b={b}, 1x28x28, width 64"),
  "ae": (["generative/generative_models.py", "--bench", "--model", "autoencoder", "--batch", "{b}"],
         ["generative/torch_reference.py", "--model", "autoencoder", "--batch", "{b}"],
         "AE train step b={b} 3x32x32{half}", "conv autoencoder train step, b={b}, 3x32x32"),
  "vgg": (["style-transfer/style_transfer.py", "--bench", "--bench-nets", "vgg19", "--bench-sizes", "512", "--bench-cases", "adam",
           "--bench-dtypes", "{dtype}"], ["style-transfer/torch_reference.py", "--sizes", "512"],
          "vgg19 512px {dtype} adam step", "VGG-19 512 px Adam step"),
  "audio": (["audio-ml/audio_classify.py", "--bench", "--cases", "train"], ["audio-ml/torch_reference.py", "--cases", "train"],
            "train step b={b}{half}", "audio CNN train step, b={b}"),
}
BATCH = {"unet": 128, "ae": 128, "vgg": 1, "audio": 64}
NO_COMPILE = {"vgg"}          # style-transfer/torch_reference.py times eager steps only (its L-BFGS closure is not compiled)


def run_side(cmd: list[str], json_path: Path, timeout: float) -> tuple[list[dict], str]:
  """Run one side; (its records, "" or the one-line reason it gave none). Under BEAM the side's own summary
  line ("BEAM searched N kernels in S s ..." or "BEAM from cache (N kernels)") is printed, so a figure says
  what its search cost."""
  try:
    r = subprocess.run([sys.executable, *cmd, "--json", str(json_path)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return [], f"timed out after {timeout:.0f} s"
  if r.returncode != 0:
    lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
    return [], (lines[-1] if lines else f"exit status {r.returncode}")[:160]
  for line in (r.stderr or "").splitlines():
    if line.startswith("BEAM searched") or line.startswith("BEAM from cache"): print(f"  {cmd[0]}: {line.strip()}", flush=True)
  return json.loads(json_path.read_text())["records"], ""


def find(records: list[dict], case: str) -> dict | None:
  return next((r for r in records if r["case"] == case), None)


def main() -> int:
  p = ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--steps", type=choice_list(*STEPS), default=list(STEPS), help=f"which steps, from {','.join(STEPS)}")
  p.add_argument("--compile", action="store_true", help="also time PyTorch's torch.compile'd steps")
  p.add_argument("--half", action="store_true", help="the mixed-precision steps, each side's --half: fp16 convolutions from fp32 "
                 "weights with loss scaling (PyTorch: autocast and a GradScaler); style transfer: its fp16 network against autocast")
  p.add_argument("--quick", action="store_true", help="the projects' --quick benches (batch 32; the audio and U-Net steps are left out)")
  p.add_argument("--timeout", type=float, default=1200.0, help="seconds each side may take")
  p.add_argument("--json", metavar="PATH", help="write the rows here")
  args = p.parse_args()
  if args.json: check_writable(args.json, "--json")
  quick, beam = (["--quick"] if args.quick else []), os.environ.get("JITBEAM", os.environ.get("BEAM", "0"))
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.steps:
      tg_cmd, torch_cmd, case, label = STEPS[name]
      b = 32 if args.quick else BATCH[name]
      fill = dict(b=b, half=" fp16" if args.half else "", dtype="fp16" if args.half else "fp32")
      tg_cmd, torch_cmd, case = [a.format(**fill) for a in tg_cmd], [a.format(**fill) for a in torch_cmd], case.format(**fill)
      half = ["--half"] if args.half else []
      t0 = time.perf_counter()
      tg, tg_why = run_side(tg_cmd + quick + (half if name != "vgg" else []) + ["--out", str(Path(tmp) / "out")],
                            Path(tmp) / f"{name}-tinygrad.json", args.timeout)
      compile_flag = ["--compile"] if args.compile and name not in NO_COMPILE else []
      pt, pt_why = run_side(torch_cmd + quick + half + ["--tf32", "off"] + compile_flag, Path(tmp) / f"{name}-torch.json", args.timeout)
      t_rec, e_rec = find(tg, case), find(pt, case)
      c_rec = find(pt, case + " (torch.compile)")
      row = dict(step=label.format(b=b) + (" fp16" if args.half else ""), tinygrad_ms=t_rec and t_rec["median_ms"],
                 torch_eager_ms=e_rec and e_rec["median_ms"],
                 torch_compile_ms=c_rec and c_rec["median_ms"], tinygrad_p90_ms=t_rec and t_rec.get("p90_ms"),
                 device=t_rec and t_rec["device"], torch_device=e_rec and e_rec["device"], jitbeam=beam,
                 why=tg_why or pt_why or ("" if t_rec and e_rec else "case missing from a side's records"))
      row["ratio_eager"] = row["tinygrad_ms"] / row["torch_eager_ms"] if t_rec and e_rec else None
      row["beam_search"] = t_rec and t_rec.get("beam_search")          # what the side's search did by the end of this case
      rows.append(row)
      print(f"{row['step']}: {fmt_ms(row['tinygrad_ms'])} vs {fmt_ms(row['torch_eager_ms'])} ({time.perf_counter() - t0:.0f} s)", flush=True)
  precision = "mixed fp16" if args.half else "fp32"
  print(f"\n### training steps, tinygrad (JITBEAM={beam}, {precision}) vs PyTorch eager ({precision}, TF32 off)\n")
  print("| step | tinygrad ms | PyTorch eager ms | torch.compile ms | tinygrad / eager | note |\n|---|---:|---:|---:|---:|---|")
  for r in rows:
    ratio = f"{r['ratio_eager']:.2f}x" if r["ratio_eager"] else "-"
    print(f"| {r['step']} | {fmt_ms(r['tinygrad_ms'])} | {fmt_ms(r['torch_eager_ms'])} | {fmt_ms(r['torch_compile_ms'])} | {ratio} | {r['why']} |")
  if args.json:
    save_json({"rows": rows, "command": " ".join(sys.argv)}, args.json)
    print(f"wrote {args.json}")
  return 0


def fmt_ms(v: float | None) -> str: return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


if __name__ == "__main__":
  sys.exit(run_main(main))
