#!/usr/bin/env python3
"""edge-deploy, the precision lever: fp32, fp16 and int8 weights for one trained CNN, and distillation into a
smaller one. Part of edge_optimize.py (--quantize, --distill); runs alone too.

Why fewer bytes per weight is speed on an edge device. A matvec y = W x (batch 1, the common case at the edge)
reads every weight once and does 2 FLOPs per weight read, far below the ~100+ FLOP/byte a GPU could do, so
time ≈ bytes / bandwidth, and halving the bytes halves the time:
    fp32   weights and activations float32                          4 bytes/weight
    fp16   weights *and* activations half (logits are half too)     2 bytes/weight
    int8   weight-only, per output channel o:  s_o = max_i |W_oi| / 127,  q = round(W / s_o) ∈ [-127, 127],
           the layer computes x @ (q · s)ᵀ with the dequantize fused into the matmul kernel   1 byte/weight
The cost of int8 is a rounding error |W − q·s| ≤ s/2 per weight and one multiply per weight in the kernel, which
is free when memory is the bottleneck. A CPU has no fast fp16 path, so there fp16 runs *slower*; the 2x is a
property of GPUs.

--quantize  Matmul GFLOP/s in fp32 and fp16 (C = A @ B, 2n³ FLOPs, inputs realized, device synchronized), then a
            digit CNN (edge_common.py: conv 1->w, conv w->2w, linear -> 10) trained here on synthetic digits and
            evaluated in the three precisions: held-out accuracy, weight bytes, latency.
--distill   Hinton et al. 2015. A student CNN, --student-width channels instead of --width, is trained alone and
            with the teacher's soft targets,
                L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y)
            (T² keeps the soft-target gradients at the scale of the hard ones when T changes), over 3 seeds:
            accuracy mean ± std, a verdict on whether it helped beyond seed noise, and distillation.png.
No mode flag: both.

Run it
  python3 edge-deploy/quantize.py                      # both modes, a few minutes on a laptop CPU
  NV=1 python3 edge-deploy/quantize.py --quantize      # Jetson
  python3 edge-deploy/quantize.py --quick              # seconds-long settings (flags you give win)
  python3 edge-deploy/quantize.py --save cnn.safetensors, then --load cnn.safetensors to evaluate it again
  python3 edge-deploy/quantize.py --bench --json out/quantize-bench.json   # matmul and CNN inference timings
Outputs in --out (out/edge-deploy/): summary.json, cnn_loss.png, distillation.png. Success: the fp32 CNN reaches
95 % on held-out digits (80 % with --quick), fp16 loses at most 1 point and int8 at most 2.
"""
from __future__ import annotations
import sys
from dataclasses import dataclass
from pathlib import Path

import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
import numpy as np
from tinygrad import Tensor, TinyJit, Device, dtypes
from common import check
from common.bench import Bench

SCRIPT = "edge-deploy/quantize.py"
MODEL = "digit-cnn"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class QuantizeConfig:
  width: int = 16                 # channels of the first conv (teacher); the second has 2·width
  student_width: int = 4
  steps: int = 600                # Adam steps for the CNN and for each student
  train_size: int = 6000
  test_size: int = 2000
  temperature: float = 4.0
  alpha: float = 0.7              # weight of the soft-target term
  seeds: int = 3                  # students per kind (alone, distilled)
  batch: int = 64
  lr: float = 3e-3
  infer_batch: int = 256          # batch of the timed inference
  sizes: tuple[int, ...] = (256, 512, 1024)
  target_pct: float = 95.0        # fp32 held-out accuracy the CNN must reach
  distill_target_pct: float = 90.0   # the teacher's; a student alone must reach 10 points less
  seed: int = 0
  timed: dict | None = None       # Bench.run keywords
  load: str | None = None
  save: str | None = None


# ---- the math ---------------------------------------------------------------------------------

def bench_matmul(bench: Bench, sizes, timed: dict) -> None:
  """C = A @ B for n x n inputs: 2n³ FLOPs. Inputs are realized before timing; the JIT'd call realizes C."""
  for n in sizes:
    for name, dt in (("fp32", dtypes.float32), ("fp16", dtypes.half)):
      a, b = Tensor.randn(n, n, dtype=dt).realize(), Tensor.randn(n, n, dtype=dt).realize()
      matmul = TinyJit(lambda a, b: (a @ b).realize())
      bench.run(f"matmul {n} {name}", lambda: matmul(a, b), rate=(2 * n**3 / 1e9, "GFLOP/s"), warmup=3, **timed)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float, alpha: float) -> Tensor:
  """α·T²·KL(p_t ‖ p_s) + (1−α)·CE(z_s, y), p = softmax(z / T); KL = Σ p_t (log p_t − log p_s), batch mean."""
  log_p_teacher = (teacher_logits / T).log_softmax(-1)
  log_p_student = (student_logits / T).log_softmax(-1)
  kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
  return alpha * T * T * kl + (1 - alpha) * student_logits.sparse_categorical_crossentropy(labels)


# ---- training and evaluation ------------------------------------------------------------------

def train_cnn(cfg: QuantizeConfig, data, width: int, init_seed: int, batch_seed: int, desc: str, loss_fn=None) -> tuple[dict, list[float]]:
  """A fresh CNN of `width` (weights from init_seed) trained by Adam on minibatches drawn with batch_seed."""
  X, Y = data[0], data[1]
  Tensor.manual_seed(init_seed)
  w = ec.cnn_init(width)
  losses = ec.train_classifier(ec.cnn_forward, w, X, Y, steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, seed=batch_seed, desc=desc, loss_fn=loss_fn)
  return w, losses


def evaluate_precisions(cfg: QuantizeConfig, w32: dict, data, bench: Bench) -> dict:
  """Held-out accuracy, weight bytes and timed inference of the same weights in fp32, fp16 and int8."""
  X_test, y_test = data[2], data[4]
  results = {}
  for precision in PRECISIONS:
    w = ec.to_precision(w32, precision)
    acc = ec.accuracy(ec.cnn_forward, w, X_test, y_test, ec.act_dtype(precision))
    xb = X_test[:cfg.infer_batch].cast(ec.act_dtype(precision)).realize()
    infer = TinyJit(lambda x, w=w: ec.cnn_forward(w, x).realize())
    rec = bench.run(f"cnn {precision} b={cfg.infer_batch}", lambda: infer(xb), rate=(cfg.infer_batch, "images/s"), **cfg.timed)
    results[precision] = {"accuracy": acc, "weight_bytes": ec.weight_nbytes(w), "latency_ms": rec["median_ms"], "images_per_s": rec["value"]}
  print(f"\n### digit CNN (width {cfg.width}, {ec.n_params(w32):,} params) on {Device.DEFAULT}, {len(y_test)} held-out digits, "
        f"batch {cfg.infer_batch}\n")
  print("| precision | accuracy | weight bytes | latency ms | images/s |\n|---|---:|---:|---:|---:|")
  for p, r in results.items():
    print(f"| {p} | {r['accuracy'] * 100:.2f} % | {r['weight_bytes']:,} | {r['latency_ms']:.3g} | {r['images_per_s']:,.0f} |")
  return results


def train_students(cfg: QuantizeConfig, data, teacher_logits: Tensor) -> tuple[dict, dict, dict]:
  """cfg.seeds students alone and as many distilled -> (accuracies by kind, loss curves, the last student)."""
  X, Y, X_test, _, y_test = data
  acc, curves, student = {"alone": [], "distilled": []}, {}, None
  for kind in ("alone", "distilled"):
    for s in range(cfg.seed, cfg.seed + cfg.seeds):
      loss_fn = None if kind == "alone" else \
        (lambda logits, idx: distillation_loss(logits, teacher_logits[idx], Y[idx], cfg.temperature, cfg.alpha))
      student, curves[f"{kind} seed {s}"] = train_cnn(cfg, data, cfg.student_width, 1000 + s, s, f"student {kind} seed {s}", loss_fn)
      acc[kind].append(ec.accuracy(ec.cnn_forward, student, X_test, y_test, dtypes.float32))
  return acc, curves, student


def distill(cfg: QuantizeConfig, data, teacher: dict, bench: Bench, out: Path) -> dict:
  X, X_test, y_test = data[0], data[2], data[4]
  teacher_acc = ec.accuracy(ec.cnn_forward, teacher, X_test, y_test, dtypes.float32)
  teacher_logits = Tensor.cat(*[ec.cnn_forward(teacher, X[i:i + 500]) for i in range(0, X.shape[0], 500)]).realize()   # (N, 10)
  acc, curves, student = train_students(cfg, data, teacher_logits)
  xb, lat = X_test[:cfg.infer_batch].realize(), {}
  for name, w in (("teacher", teacher), ("student", student)):
    infer = TinyJit(lambda x, w=w: ec.cnn_forward(w, x).realize())
    lat[name] = bench.run(f"{name} fp32 b={cfg.infer_batch}", lambda: infer(xb), rate=(cfg.infer_batch, "images/s"), **cfg.timed)["median_ms"]
  mean = {k: float(np.mean(v)) * 100 for k, v in acc.items()}
  std = {k: float(np.std(v)) * 100 for k, v in acc.items()}
  delta, noise = mean["distilled"] - mean["alone"], max(std["alone"], std["distilled"], 0.1)
  verdict = "helped" if delta > noise else "hurt" if delta < -noise else "made no difference beyond seed-to-seed noise"
  res = {"teacher_accuracy": teacher_acc, "student_accuracy": acc, "mean_pct": mean, "std_pct": std, "delta_pts": delta, "verdict": verdict,
         "teacher_params": ec.n_params(teacher), "student_params": ec.n_params(student), "latency_ms": lat,
         "temperature": cfg.temperature, "alpha": cfg.alpha, "seeds": cfg.seeds, "steps": cfg.steps}
  print_distill(cfg, res, len(y_test))
  plot_distill(cfg, res, curves, out / "distillation.png")
  return res


# ---- success checks ---------------------------------------------------------------------------

def quantize_ok(cfg: QuantizeConfig, results: dict) -> bool:
  ok = check("CNN fp32 held-out accuracy", results["fp32"]["accuracy"] * 100, cfg.target_pct, unit=" %")
  for p, tol in (("fp16", 1.0), ("int8", 2.0)):
    ok &= check(f"{p} accuracy drop vs fp32", (results["fp32"]["accuracy"] - results[p]["accuracy"]) * 100, tol, higher_is_better=False, unit=" pts")
  return ok


def distill_ok(cfg: QuantizeConfig, res: dict) -> bool:
  target = cfg.distill_target_pct
  return check("teacher accuracy", res["teacher_accuracy"] * 100, target, unit=" %") & \
    check("student (alone) mean accuracy", res["mean_pct"]["alone"], target - 10, unit=" %")


# --- plumbing: reports, checkpoints, bench, CLI, main ------------------------------------------

def print_distill(cfg: QuantizeConfig, res: dict, n_test: int) -> None:
  mean, std, lat = res["mean_pct"], res["std_pct"], res["latency_ms"]
  print(f"\n### distillation (T={cfg.temperature}, α={cfg.alpha}, {cfg.seeds} seeds, {cfg.steps} steps each, {n_test} held-out digits)\n")
  print("| model | params | accuracy | latency ms |\n|---|---:|---:|---:|")
  print(f"| teacher CNN w={cfg.width} | {res['teacher_params']:,} | {res['teacher_accuracy'] * 100:.2f} % | {lat['teacher']:.3g} |")
  for k in ("alone", "distilled"):
    print(f"| student CNN w={cfg.student_width}, {k} | {res['student_params']:,} | {mean[k]:.2f} ± {std[k]:.2f} % | {lat['student']:.3g} |")
  print(f"\nDistillation {res['verdict']}: {res['delta_pts']:+.2f} pts (student alone {mean['alone']:.2f} ± {std['alone']:.2f} %, "
        f"distilled {mean['distilled']:.2f} ± {std['distilled']:.2f} %)")


def plot_distill(cfg: QuantizeConfig, res: dict, curves: dict, dest: Path) -> None:
  from common.plots import figure, save_figure
  mean, std = res["mean_pct"], res["std_pct"]
  fig, (ax1, ax2) = figure(1, 2, size=(10, 3.8))
  ax1.bar(["teacher", "student alone", "student distilled"], [res["teacher_accuracy"] * 100, mean["alone"], mean["distilled"]],
          yerr=[0, std["alone"], std["distilled"]], capsize=6, color=["gray", "tab:blue", "tab:orange"])
  ax1.set(ylabel="held-out accuracy %", ylim=(min(mean.values()) - 5, 100), title=f"distillation T={cfg.temperature} α={cfg.alpha}")
  for name, c in curves.items():
    ax2.plot(np.convolve(c, np.ones(10) / 10, mode="valid"), lw=1, color="tab:blue" if "alone" in name else "tab:orange", label=name)
  ax2.set(xlabel="step", ylabel="training loss (10-step mean)", yscale="log", title="student loss (distilled loss includes the T² KL term)")
  ax2.legend(fontsize=6)
  save_figure(fig, dest)


def load_cnn(cfg: QuantizeConfig) -> dict[str, Tensor]:
  """The CNN of --load: written by this script's --save, for the --width asked, every key and shape checked."""
  from common.files import load_checkpoint, check_state_matches
  state, meta = load_checkpoint(cfg.load, script=SCRIPT, model=MODEL, required_meta=("width",))
  if meta["width"] != cfg.width:
    raise common.UserError(f"checkpoint {cfg.load} holds a width-{meta['width']} CNN, not {cfg.width}: give --width {meta['width']}")
  check_state_matches({k: tuple(v.shape) for k, v in ec.cnn_init(cfg.width).items()}, state, f"checkpoint {cfg.load}")
  return {k: v.float().realize() for k, v in state.items()}


def train_teacher(cfg: QuantizeConfig, data, out: Path, summary: dict) -> dict[str, Tensor]:
  """Train the digit CNN: its loss curve, and --save."""
  from common.files import save_checkpoint
  from common.plots import plot_curves
  w, losses = train_cnn(cfg, data, cfg.width, cfg.seed, cfg.seed, "CNN")
  summary["cnn"] = {"width": cfg.width, "steps": len(losses), "train_size": cfg.train_size, "final_loss": losses[-1]}
  plot_curves(out / "cnn_loss.png", {"train loss": losses}, title="digit CNN (fp32 training)", ylabel="cross-entropy", logy=True, smooth=20)
  if cfg.save:
    save_checkpoint(w, cfg.save, {"width": cfg.width, "steps": len(losses), "seed": cfg.seed}, script=SCRIPT, model=MODEL)
    print(f"wrote {cfg.save}")
  return w


def run(cfg: QuantizeConfig, bench: Bench, out: Path, summary: dict, modes=("quantize", "distill")) -> bool:
  """The lever's demo: the CNN (trained, or read from --load) in three precisions, then distillation into a student."""
  teacher = load_cnn(cfg) if cfg.load else None            # a bad checkpoint is refused before any work
  data = ec.load_digits(cfg.train_size, cfg.test_size, cfg.seed)
  if teacher is None: teacher = train_teacher(cfg, data, out, summary)
  else: summary["cnn"] = {"width": cfg.width, "loaded_from": cfg.load}
  ok = True
  if "quantize" in modes:
    bench_matmul(bench, cfg.sizes, cfg.timed)
    summary["quantize"] = evaluate_precisions(cfg, teacher, data, bench)
    ok &= quantize_ok(cfg, summary["quantize"])
  if "distill" in modes:
    summary["distill"] = distill(cfg, data, teacher, bench, out)
    ok &= distill_ok(cfg, summary["distill"])
  return ok


def run_bench(cfg: QuantizeConfig, bench: Bench) -> None:
  """Hot paths for common.compare: matmul, and CNN inference in three precisions (untrained: speed does not depend on the values)."""
  bench_matmul(bench, cfg.sizes, cfg.timed)
  Tensor.manual_seed(cfg.seed)
  w32 = {k: v.realize() for k, v in ec.cnn_init(cfg.width).items()}
  for precision in PRECISIONS:
    w = ec.to_precision(w32, precision)
    xb = Tensor.rand(cfg.infer_batch, 1, 28, 28, dtype=ec.act_dtype(precision)).realize()
    infer = TinyJit(lambda x, w=w: ec.cnn_forward(w, x).realize())
    bench.run(f"cnn {precision} b={cfg.infer_batch}", lambda: infer(xb), rate=(cfg.infer_batch, "images/s"), **cfg.timed)


def add_flags(p) -> None:
  from common.cli import int_list, positive_float, probability, positive_int
  g = p.add_argument_group("precision and distillation (quantize.py)")
  ec.add_flag(g, "--sizes", type=int_list, default=None, help="matmul sizes (default 256..4096 on a GPU, 256..1024 on a CPU; --quick 128,256)")
  ec.add_flag(g, "--width", type=ec.int_range(1, 1024), default=16, help="digit CNN channels in the first conv (the teacher)")
  ec.add_flag(g, "--steps", type=positive_int, default=600, help="Adam steps for the CNN and each student")
  ec.add_flag(g, "--train-size", type=ec.int_range(10, 1_000_000), default=6000, help="synthetic training digits")
  ec.add_flag(g, "--test-size", type=ec.int_range(10, 1_000_000), default=2000, help="synthetic held-out digits")
  ec.add_flag(g, "--student-width", type=ec.int_range(1, 1024), default=4, help="channels in the first conv of the student CNN")
  ec.add_flag(g, "--temperature", type=positive_float, default=4.0, help="distillation temperature T")
  ec.add_flag(g, "--alpha", type=probability, default=0.7, help="weight of the soft-target term (1 - alpha on the hard labels)")
  p.preset("quick", steps=150, train_size=1000, test_size=500)


def config(p, args, modes) -> QuantizeConfig:
  """The flags as a QuantizeConfig; impossible combinations and sizes that cannot fit are one line here."""
  if args.student_width >= args.width and "distill" in modes:
    p.error(f"--student-width {args.student_width} must be smaller than the teacher's --width {args.width} (distillation compresses)")
  if getattr(args, "load", None) and getattr(args, "save", None):
    p.error("--save with --load: nothing is trained, so there is no new model to save (copy the file instead)")
  if args.bench and (getattr(args, "load", None) or getattr(args, "save", None)):
    p.error("--bench times an untrained CNN (speed does not depend on the weights): it neither loads nor saves one")
  sizes = args.sizes or ([128] if args.quick and args.bench else [128, 256] if args.quick else [256, 1024] if args.bench and ec.on_cpu()
                         else [256, 512, 1024] if ec.on_cpu() else [256, 512, 1024, 2048, 4096])
  ec.check_fits(3 * max(sizes) ** 2 * 4, f"--sizes {max(sizes)} (three {max(sizes)}² fp32 matrices)", p)
  ec.check_fits((args.train_size + args.test_size) * 784 * 4 + 16 * ec.cnn_param_count(args.width), "the digits and the CNN's training state", p)
  return QuantizeConfig(width=args.width, student_width=args.student_width, steps=args.steps, train_size=args.train_size, test_size=args.test_size,
                        temperature=args.temperature, alpha=args.alpha, seeds=2 if args.quick else 3, infer_batch=64 if args.quick else 256,
                        sizes=tuple(sizes), target_pct=80.0 if args.quick else 95.0,
                        distill_target_pct=70.0 if args.quick else 90.0, seed=args.seed, timed=ec.timing(args.quick),
                        load=getattr(args, "load", None), save=getattr(args, "save", None))


def parse_args(argv=None):
  p = common.project_parser(ec.PROJECT, __doc__, save_help="the trained digit CNN (.safetensors)",
                            load_help="a CNN written by --save, evaluated instead of training one")
  g = p.add_argument_group("modes (none given: both)")
  g.add_argument("--quantize", action="store_true", help="matmul sweep and the CNN in fp32, fp16 and int8")
  g.add_argument("--distill", action="store_true", help="students trained alone and with soft targets")
  add_flags(p)
  args = p.parse_args(argv)
  modes = [m for m in ("quantize", "distill") if getattr(args, m)] or ["quantize", "distill"]
  return args, modes, config(p, args, modes)


def main() -> int:
  args, modes, cfg = parse_args()
  common.seed_all(args.seed)
  bench = Bench(ec.PROJECT)
  if args.bench:
    run_bench(cfg, bench)
    bench.print()
    bench.write_json(args.json)
    return 0
  from common.cli import check_out_dir
  from common.files import save_json
  check_out_dir(args)
  summary: dict = {"device": Device.DEFAULT, "modes": modes, "config": {k: v for k, v in cfg.__dict__.items() if k != "timed"}}
  ok = run(cfg, bench, Path(args.out), summary, modes)
  summary["bench"] = [{k: v for k, v in r.items() if k != "samples_ms"} for r in bench.records]
  save_json(summary, Path(args.out) / "summary.json")
  bench.write_json(args.json)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
