#!/usr/bin/env python3
"""edge-deploy: the practical toolkit for putting models on a Jetson Orin, where every claim is measured.

A Jetson Orin AGX has 64 GB of memory shared by CPU and GPU and about 204.8 GB/s of DRAM bandwidth
(≈ 102 GB/s is what real kernels reach). Those two numbers, not FLOPs, decide most of edge deployment.
Each mode below measures one lever on this device; the Orin figures are inputs to the planner, never
results. Modes (any combination; none given = all of them):

--quantize  Matmul GFLOP/s in fp32 and fp16 at n = 256…4096 (inputs realized first, device synchronized,
            no host copies timed). Then a small CNN is trained here on synthetic digits (common.digits)
            and evaluated three ways:
              fp32   weights and activations float32                        4 bytes/weight
              fp16   weights *and* activations half (logits are half too)   2 bytes/weight
              int8   weight-only: per output channel o,  s_o = max_i |W_oi| / 127,  q = round(W / s_o)
                     ∈ [-127, 127] stored as int8; the layer computes x @ (q · s)ᵀ with the dequantize
                     fused into the matmul kernel (no fp weight tensor is ever written).   1 byte/weight
            Why fp16 ~doubles speed when bandwidth-bound: a matvec y = W x reads every weight once and
            does 2 FLOPs per weight read, far below the ~100+ FLOP/byte a GPU could do, so time ≈ bytes /
            bandwidth, and halving bytes halves time. int8 halves it again; the cost is rounding error
            |W − q·s| ≤ s/2 per weight (one part in 254 of the channel's largest weight) and a multiply
            per weight in the kernel, which is free when memory is the bottleneck.
--distill   Hinton et al. 2015. A teacher CNN is trained; a 4x narrower CNN student is trained alone and with
            L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y)
            (T² keeps the soft-target gradients at the scale of the hard ones when T changes), over 3
            seeds: accuracy mean ± std, params, latency, a table and a PNG, and a verdict on whether it helped.
--memory    A planner: weights = Σ params·bytes(dtype); activations = batch · elements/sample · bytes;
            training adds grads (4 B/param) and Adam's m, v (2 × 4 B/param); transformers add the KV cache
            2 · layers · kv_heads · head_dim · context · batch · bytes. Bandwidth-bound decode:
            tok/s ≤ BW / (bytes of weights read per token + KV bytes read). Validated against tinygrad's
            GlobalCounters.mem_used for this script's own models (within 10 %), then a table for LLaMA 3.2
            1B/3B, LLaMA 3.1 8B, Qwen3 0.6B/1.7B, ResNet-50 and the repo's project models.
--fusion    Kernels tinygrad schedules and bytes they move (its own estimate) against the minimum
            (inputs + output once) for an elementwise chain, matmul+bias+ReLU, softmax, layer norm and a
            conv block, fused vs forced-unfused (realize after every op); TinyJit replay vs eager dispatch.
--beam      Chosen kernels timed at BEAM = 0, 1, 2, 4, each level in a fresh process with
            IGNORE_BEAM_CACHE=1 so the search really runs; search (+compile) time is reported apart.
--llm       A LLaMA-shaped transformer with random weights decoding one token at a time with a KV cache
            (shapes for one step: x (1,1,d); q (1,H,1,hd); K,V cache (1,Hkv,ctx,hd); logits (1,V)) in fp16
            and with int8 weights: tok/s, ms/token, kernels/token, achieved GB/s = bytes read per token /
            time, against the copy bandwidth measured on the same device. It runs twice, in subprocesses
            with MATVEC_FIX=0 and =1 (the Tegra backend's fp16 matvec heuristic fix; reported as
            "not available" when the backend does not provide it). The workload behind the reference claim
            of 36.7 tok/s for LLaMA 3.2 1B Q6_K on an Orin with NV=1.
            Laid out for a GPU at batch 1, where a step is as fast as its matvecs stream the weights and every
            kernel launch still costs ~2 µs inside a CUDA graph. 11 kernels per layer (LLaMA 3.2 1B: 184/token):
              [1] mean(x²)            one number; RMSNorm's division and ·g happen as [2] loads x
              [2] q|k|v               one matvec over wqkv = [Wq; Wk; Wv] (stored fused)
              [3] KV write            rope(k) and v into the cache at pos
              [4] scores              q·Kᵀ/√hd over positions 0..pos, rope(q) applied as q is read
              [5] max                 per head, for a safe softmax
              [6] softmax·V           (Σ_t e_t v_t) / (Σ_t e_t), e_t = exp(s_t − max): the sum shares P·V's loop
              [7] x += Wo·attn
              [8] mean(x²)            for the FFN norm
              [9] gate|up             one matvec over w_gate_up = [Wg; Wu]
              [10] silu(gate)·up      its own small kernel: fused into [11] it would be recomputed for every row
              [11] x += Wdown·h
            plus the embedding row, the final norm and head, and a two-level argmax (greedy_token). The matvecs
            need the backend's matvec fix (MATVEC_FIX=1, on by default on a Jetson): 16-byte loads, 32 threads per
            row. Measured on an H200 (fp16 1B): 136 tok/s without it, 724 with it, 780 with JITBEAM=4 = 50.9 %
            of the copy bandwidth; PyTorch eager does 122.

Run it
  Jetson:  NV=1 python3 edge-deploy/edge_optimize.py --llm          (JITBEAM=2 to let tinygrad search kernels)
  laptop:  python3 edge-deploy/edge_optimize.py --quantize --distill  (CPU; --quick for a seconds-long pass)
  bench:   NV=1 python3 edge-deploy/edge_optimize.py --bench --json out/edge.json
Flags worth trying: --llm-config llama3.2-3b | tiny | "dim,layers,heads,kv_heads,hidden,vocab";
--temperature and --alpha for distillation; --sizes for the matmul sweep; --beams 0,2.
Every mode writes its tables to out/edge-deploy/summary.json (and PNGs), --json writes the timing records.

What to expect (measured with DEV=CPU on a shared, heavily loaded 2-core x86 VM: `--all`, see README.md
for every table and the commands): the CNN reaches 99.75 % on 2000 held-out synthetic digits in fp32,
fp16 and int8 alike, int8 weights taking 25 % of the fp32 bytes; the 4x narrower student reaches ~98.4 %
with or without distillation (on these easy digits soft targets did not help: -0.2 pts, within seed
noise); the planner matches tinygrad's allocator within 0.5 %; fusion cuts kernels 1.5-5x and bytes
moved 1.6-5.5x. A CPU has no fast fp16 path, so fp16 runs *slower* there; the 2x is a GPU property.
--llm decodes the small shape in 51 kernels/token (counted on the CPU; the schedule, hence the count, is
the same on any device).
On an Orin (planned, not measured): LLaMA 3.2 1B fp16 reads 2.5 GB per token, so decode is bounded
by ~41 tok/s at 102 GB/s with a short context (37 tok/s with an 8k-token KV cache); int8 roughly doubles it.
"""
from __future__ import annotations
import argparse, json, math, os, subprocess, sys, time
from dataclasses import dataclass
from pathlib import Path

import common                      # first: turns NV=1 / CUDA=1 into DEV=... before tinygrad reads it
import numpy as np
from tinygrad import Tensor, TinyJit, Device, GlobalCounters, Context, UOp, dtypes, nn
from common import UserError, check
from common.bench import Bench, jit_kernel_count
from common.cli import int_list, positive_float, probability
from common.device import open_device
from common.files import out_dir, save_json, save_checkpoint, load_checkpoint, check_state_matches
from common.plots import figure, save_figure, plot_curves

PROJECT = "edge-deploy"
MODES = ("quantize", "distill", "memory", "fusion", "beam", "llm")
# Jetson Orin AGX 64GB: datasheet memory and peak bandwidth, and the effective bandwidth the repo's reference
# measurements reach. Inputs to the planner, not measurements of this run.
ORIN_MEMORY_GB, ORIN_EFFECTIVE_GBS, ORIN_PEAK_GBS = 64.0, 102.0, 204.8
TIMED = {"iters": 10, "max_seconds": 2.0}     # steady-state samples per timed case (--quick: fewer)
BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "q6_k": 6.5625 / 8}   # Q6_K: 6.5625 bits per weight


def on_cpu() -> bool: return Device.DEFAULT.split(":")[0] in ("CPU", "PYTHON")
def synchronize() -> None: Device[Device.DEFAULT].synchronize()


# ================================================================================================
# 1. --quantize: matmul throughput, then one trained CNN in fp32, fp16 and int8
# ================================================================================================

def bench_matmul(bench: Bench, sizes: list[int]) -> None:
  """C = A @ B for n x n inputs: 2n³ FLOPs. Inputs are realized before timing; the JIT'd call realizes C."""
  for n in sizes:
    for name, dt in (("fp32", dtypes.float32), ("fp16", dtypes.half)):
      a, b = Tensor.randn(n, n, dtype=dt).realize(), Tensor.randn(n, n, dtype=dt).realize()
      matmul = TinyJit(lambda a, b: (a @ b).realize())
      bench.run(f"matmul {n} {name}", lambda: matmul(a, b), rate=(2 * n**3 / 1e9, "GFLOP/s"), warmup=3, **TIMED)


def cnn_init(width: int) -> dict[str, Tensor]:
  """Digit CNN weights. conv 1->w 3x3, conv w->2w 3x3, linear 2w·5·5 -> 10 (PyTorch's default init)."""
  layers = {"conv1": nn.Conv2d(1, width, 3), "conv2": nn.Conv2d(width, 2 * width, 3), "fc": nn.Linear(2 * width * 25, 10)}
  return {f"{name}.{p}": getattr(layer, p) for name, layer in layers.items() for p in ("weight", "bias")}


@dataclass
class Int8Weight:
  """A weight stored as int8 codes with one scale per output channel (axis 0 of the weight)."""
  q: Tensor        # int8, the weight's shape (out, ...)
  scale: Tensor    # (out,), in the compute dtype

  def dequantize(self) -> Tensor:
    """q · s, lazily: used inside a matmul/conv, tinygrad fuses it into that kernel."""
    return self.q.cast(self.scale.dtype) * self.scale.reshape(-1, *[1] * (self.q.ndim - 1))

  def nbytes(self) -> int: return self.q.nbytes() + self.scale.nbytes()


def quantize_int8(w: Tensor, dtype=dtypes.half) -> Int8Weight:
  """Symmetric per-output-channel quantization: s_o = max_i |W_oi| / 127, q_oi = round(W_oi / s_o)."""
  w = w.float()
  amax = w.abs().reshape(w.shape[0], -1).max(axis=1)                 # (out,)
  scale = (amax / 127).maximum(1e-12)                                 # an all-zero row keeps a finite scale
  q = (w / scale.reshape(-1, *[1] * (w.ndim - 1))).round().clip(-127, 127).cast(dtypes.int8)
  return Int8Weight(q.realize(), scale.cast(dtype).realize())


def as_weight(w: Tensor | Int8Weight) -> Tensor: return w.dequantize() if isinstance(w, Int8Weight) else w


def cnn_forward(w: dict, x: Tensor) -> Tensor:
  """x (B, 1, 28, 28) -> logits (B, 10), in whatever dtype x and the weights have."""
  x = x.conv2d(as_weight(w["conv1.weight"]), w["conv1.bias"]).relu().max_pool2d(2)   # (B, w, 13, 13)
  x = x.conv2d(as_weight(w["conv2.weight"]), w["conv2.bias"]).relu().max_pool2d(2)   # (B, 2w, 5, 5)
  return x.flatten(1).linear(as_weight(w["fc.weight"]).T, w["fc.bias"])              # (B, 10)


def to_precision(w: dict[str, Tensor], precision: str) -> dict:
  """fp32 | fp16 (every tensor half) | int8 (weights int8 + fp16 scales, biases fp16, activations fp16)."""
  if precision == "fp32": return {k: v.float().realize() for k, v in w.items()}
  if precision == "fp16": return {k: v.half().realize() for k, v in w.items()}
  return {k: quantize_int8(v) if k.endswith("weight") else v.half().realize() for k, v in w.items()}


def act_dtype(precision: str): return dtypes.float32 if precision == "fp32" else dtypes.half
def weight_nbytes(w: dict) -> int: return sum(v.nbytes() for v in w.values())
def n_params(w: dict) -> int: return sum(v.numel() for v in w.values())


def train_classifier(forward, w: dict[str, Tensor], X: Tensor, Y: Tensor, steps: int, batch: int, lr: float, seed: int,
                     desc: str, loss_fn=None, stats: dict | None = None) -> list[float]:
  """Adam on random minibatches of the device-resident (X, Y). loss_fn(logits, idx) replaces plain
  cross-entropy (distillation uses it). The whole step is one TinyJit: from the 3rd call it replays.
  `stats` receives the device bytes in use after the last step, while optimizer and JIT are alive."""
  opt = nn.optim.Adam(list(w.values()), lr=lr)
  loss_fn = loss_fn or (lambda logits, idx: logits.sparse_categorical_crossentropy(Y[idx]))

  @TinyJit
  def step(idx: Tensor) -> Tensor:
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = loss_fn(forward(w, X[idx]), idx)
      loss.backward()
      return loss.realize(*opt.schedule_step())

  rng, losses = np.random.default_rng(seed), []
  for i in (bar := common.progress(range(steps), desc=desc)):
    losses.append(step(Tensor(rng.integers(0, X.shape[0], batch, dtype=np.int32))).item())
    if i % 20 == 0: bar.set_description(f"{desc} loss {losses[-1]:.3f}")
  if stats is not None: stats["mem_used"] = GlobalCounters.mem_used
  return losses


def accuracy(forward, w: dict, X: Tensor, Y: np.ndarray, dtype, batch: int = 500) -> float:
  hits = sum(int((forward(w, X[i:i + batch].cast(dtype)).argmax(1).numpy() == Y[i:i + batch]).sum()) for i in range(0, len(Y), batch))
  return hits / len(Y)


def load_digits(args) -> tuple[Tensor, Tensor, Tensor, np.ndarray, np.ndarray]:
  from common.digits import digit_splits
  n_train, n_test = (1000, 500) if args.quick else (args.train_size, 2000)
  x_tr, y_tr, x_te, y_te = digit_splits(n_train, n_test, seed=args.seed, size=28)
  return Tensor(x_tr).realize(), Tensor(y_tr.astype(np.int32)).realize(), Tensor(x_te).realize(), y_tr, y_te


def trained_cnn(args, data, out: Path) -> tuple[dict[str, Tensor], list[float]]:
  """Train the digit CNN, or read it from --load (checked key by key and shape by shape)."""
  X, Y = data[0], data[1]
  Tensor.manual_seed(args.seed)
  w = cnn_init(args.width)
  if args.load:
    state, meta = load_checkpoint(args.load)
    check_state_matches(w, state, f"checkpoint {args.load}")
    return {k: state[k].float().realize() for k in w}, []
  losses = train_classifier(cnn_forward, w, X, Y, steps=150 if args.quick else args.steps, batch=64, lr=3e-3, seed=args.seed, desc="CNN")
  plot_curves(out / "cnn_loss.png", {"train loss": losses}, title="digit CNN (fp32 training)", ylabel="cross-entropy", logy=True, smooth=20)
  if args.save: save_checkpoint(w, args.save, {"width": args.width, "steps": len(losses)})
  return w, losses


def run_quantize(args, bench: Bench, out: Path, data, summary: dict) -> tuple[bool, dict]:
  sizes = args.sizes or ([128, 256] if args.quick else [256, 512, 1024] if on_cpu() else [256, 512, 1024, 2048, 4096])
  bench_matmul(bench, sizes)
  w32, _ = trained_cnn(args, data, out)
  X_test, y_test = data[2], data[4]
  batch = 64 if args.quick else 256
  rows, results = [], {}
  for precision in ("fp32", "fp16", "int8"):
    w = to_precision(w32, precision)
    acc = accuracy(cnn_forward, w, X_test, y_test, act_dtype(precision))
    xb = X_test[:batch].cast(act_dtype(precision)).realize()
    infer = TinyJit(lambda x: cnn_forward(w, x).realize())
    rec = bench.run(f"cnn {precision} b={batch}", lambda: infer(xb), rate=(batch, "images/s"), **TIMED)
    results[precision] = {"accuracy": acc, "weight_bytes": weight_nbytes(w), "latency_ms": rec["median_ms"], "images_per_s": rec["value"]}
    rows.append(f"| {precision} | {acc * 100:.2f} % | {weight_nbytes(w):,} | {rec['median_ms']:.3g} | {rec['value']:,.0f} |")
  print(f"\n### digit CNN (width {args.width}, {n_params(w32):,} params) on {Device.DEFAULT}, {len(y_test)} held-out digits, batch {batch}\n")
  print("| precision | accuracy | weight bytes | latency ms | images/s |\n|---|---:|---:|---:|---:|\n" + "\n".join(rows))
  summary["quantize"] = results
  target = 0.80 if args.quick else 0.95
  ok = check("CNN fp32 held-out accuracy", results["fp32"]["accuracy"] * 100, target * 100, unit=" %")
  for p, tol in (("fp16", 1.0), ("int8", 2.0)):
    drop = (results["fp32"]["accuracy"] - results[p]["accuracy"]) * 100
    ok &= check(f"{p} accuracy drop vs fp32", drop, tol, higher_is_better=False, unit=" pts")
  return ok, w32


# ================================================================================================
# 2. --distill: soft targets at temperature T (Hinton et al. 2015)
# ================================================================================================

def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float, alpha: float) -> Tensor:
  """α·T²·KL(p_t ‖ p_s) + (1−α)·CE(z_s, y), p = softmax(z / T); KL = Σ p_t (log p_t − log p_s), batch mean."""
  log_p_teacher = (teacher_logits / T).log_softmax(-1)
  log_p_student = (student_logits / T).log_softmax(-1)
  kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
  return alpha * T * T * kl + (1 - alpha) * student_logits.sparse_categorical_crossentropy(labels)


def run_distill(args, bench: Bench, out: Path, data, summary: dict, teacher: dict | None) -> bool:
  """Teacher: the digit CNN at --width. Student: the same architecture at --student-width (~5x fewer params)."""
  X, Y, X_test, _, y_test = data
  if teacher is None: teacher, _ = trained_cnn(args, data, out)
  teacher_acc = accuracy(cnn_forward, teacher, X_test, y_test, dtypes.float32)
  teacher_logits = Tensor.cat(*[cnn_forward(teacher, X[i:i + 500]) for i in range(0, X.shape[0], 500)]).realize()   # (N, 10)
  steps = 150 if args.quick else args.steps
  seeds = [args.seed + k for k in range(2 if args.quick else 3)]
  acc = {"alone": [], "distilled": []}
  curves = {}
  for kind in ("alone", "distilled"):
    for s in seeds:
      Tensor.manual_seed(1000 + s)
      w = cnn_init(args.student_width)
      loss_fn = None if kind == "alone" else \
        (lambda logits, idx: distillation_loss(logits, teacher_logits[idx], Y[idx], args.temperature, args.alpha))
      losses = train_classifier(cnn_forward, w, X, Y, steps=steps, batch=64, lr=3e-3, seed=s, desc=f"student {kind} seed {s}", loss_fn=loss_fn)
      acc[kind].append(accuracy(cnn_forward, w, X_test, y_test, dtypes.float32))
      curves[f"{kind} seed {s}"] = losses
  batch = 256
  xb = X_test[:batch].realize()
  lat = {}
  student = w
  for name, w in (("teacher", teacher), ("student", student)):
    infer = TinyJit(lambda x, w=w: cnn_forward(w, x).realize())
    lat[name] = bench.run(f"{name} fp32 b={batch}", lambda: infer(xb), rate=(batch, "images/s"), **TIMED)["median_ms"]
  mean = {k: float(np.mean(v)) * 100 for k, v in acc.items()}
  std = {k: float(np.std(v)) * 100 for k, v in acc.items()}
  delta = mean["distilled"] - mean["alone"]
  noise = max(std["alone"], std["distilled"], 0.1)
  verdict = "helped" if delta > noise else "hurt" if delta < -noise else "made no difference beyond seed-to-seed noise"
  print(f"\n### distillation (T={args.temperature}, α={args.alpha}, {len(seeds)} seeds, {steps} steps each, {len(y_test)} held-out digits)\n")
  print("| model | params | accuracy | latency ms (b=256) |\n|---|---:|---:|---:|")
  print(f"| teacher CNN w={args.width} | {n_params(teacher):,} | {teacher_acc * 100:.2f} % | {lat['teacher']:.3g} |")
  for k in ("alone", "distilled"):
    print(f"| student CNN w={args.student_width}, {k} | {n_params(student):,} | {mean[k]:.2f} ± {std[k]:.2f} % | {lat['student']:.3g} |")
  print(f"\nDistillation {verdict}: {delta:+.2f} pts (student alone {mean['alone']:.2f} ± {std['alone']:.2f} %, "
        f"distilled {mean['distilled']:.2f} ± {std['distilled']:.2f} %)")
  fig, (ax1, ax2) = figure(1, 2, size=(10, 3.8))
  names = ["teacher", "student alone", "student distilled"]
  ax1.bar(names, [teacher_acc * 100, mean["alone"], mean["distilled"]], yerr=[0, std["alone"], std["distilled"]], capsize=6,
          color=["gray", "tab:blue", "tab:orange"])
  ax1.set(ylabel="held-out accuracy %", ylim=(min(mean.values()) - 5, 100), title=f"distillation T={args.temperature} α={args.alpha}")
  for name, c in curves.items():
    ax2.plot(np.convolve(c, np.ones(10) / 10, mode="valid"), lw=1, color="tab:blue" if "alone" in name else "tab:orange", label=name)
  ax2.set(xlabel="step", ylabel="training loss (10-step mean)", yscale="log", title="student loss (distilled loss includes the T² KL term)")
  ax2.legend(fontsize=6)
  save_figure(fig, out / "distillation.png")
  summary["distill"] = {"teacher_accuracy": teacher_acc, "student_accuracy": acc, "mean_pct": mean, "std_pct": std, "delta_pts": delta,
                        "verdict": verdict, "teacher_params": n_params(teacher), "student_params": n_params(student), "latency_ms": lat,
                        "temperature": args.temperature, "alpha": args.alpha}
  target = 70.0 if args.quick else 90.0
  return check("teacher accuracy", teacher_acc * 100, target, unit=" %") & check("student (alone) mean accuracy", mean["alone"], target - 10, unit=" %")


# ================================================================================================
# 3. --llm: a LLaMA-shaped decoder with a KV cache (defined before the planner, which counts its bytes)
# ================================================================================================

@dataclass(frozen=True)
class LlamaConfig:
  dim: int
  layers: int
  heads: int
  kv_heads: int
  hidden: int
  vocab: int
  tied: bool = True             # LLaMA 3.2 1B/3B and Qwen3 small models share the embedding with the output head
  head_dim: int = 0             # 0: dim // heads
  qk_norm: bool = False         # Qwen3 normalizes q and k per head
  rope_theta: float = 500000.0
  norm_eps: float = 1e-5

  @property
  def hd(self) -> int: return self.head_dim or self.dim // self.heads

  def layer_params(self) -> int:
    d, hd = self.dim, self.hd
    attn = d * self.heads * hd + 2 * d * self.kv_heads * hd + self.heads * hd * d
    return attn + 3 * d * self.hidden + 2 * d + (2 * hd if self.qk_norm else 0)

  def params(self) -> int: return self.vocab * self.dim * (1 if self.tied else 2) + self.layers * self.layer_params() + self.dim

  def params_read_per_token(self) -> int:
    """A decode step reads every layer weight, the output head (vocab x dim) and one embedding row."""
    return self.layers * self.layer_params() + self.dim + self.vocab * self.dim + (self.dim if self.tied else 0)

  def kv_bytes(self, context: int, batch: int = 1, bytes_per: float = 2.0) -> float:
    return 2 * self.layers * self.kv_heads * self.hd * context * batch * bytes_per


LLAMA_CONFIGS = {
  "llama3.2-1b": LlamaConfig(2048, 16, 32, 8, 8192, 128256),
  "llama3.2-3b": LlamaConfig(3072, 28, 24, 8, 8192, 128256),
  "llama3.1-8b": LlamaConfig(4096, 32, 32, 8, 14336, 128256, tied=False),
  "qwen3-0.6b": LlamaConfig(1024, 28, 16, 8, 3072, 151936, head_dim=128, qk_norm=True, rope_theta=1e6, norm_eps=1e-6),
  "qwen3-1.7b": LlamaConfig(2048, 28, 16, 8, 6144, 151936, head_dim=128, qk_norm=True, rope_theta=1e6, norm_eps=1e-6),
  "small": LlamaConfig(512, 4, 8, 2, 1536, 8192),
  "tiny": LlamaConfig(64, 2, 4, 2, 128, 256),
}


def parse_llama_config(text: str) -> LlamaConfig:
  if text in LLAMA_CONFIGS: return LLAMA_CONFIGS[text]
  try: dim, layers, heads, kv_heads, hidden, vocab = (int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is neither a preset ({', '.join(LLAMA_CONFIGS)}) nor 'dim,layers,heads,kv_heads,hidden,vocab'")
  if min(dim, layers, heads, kv_heads, hidden, vocab) <= 0 or dim % heads or heads % kv_heads or (dim // heads) % 2:
    raise argparse.ArgumentTypeError(f"{text!r}: need positive sizes, dim divisible by heads, heads by kv_heads, and an even head dim")
  return LlamaConfig(dim, layers, heads, kv_heads, hidden, vocab)


def llama_init(cfg: LlamaConfig, dtype=dtypes.half, std: float = 0.02) -> dict[str, Tensor]:
  """Random weights N(0, 0.02²), norms 1: a real model's bytes and shapes, not its knowledge. W is (out, in).
  Projections that read the same input are stored fused, rows stacked, so one matvec computes them all:
    wqkv       = [Wq; Wk; Wv]   ((H + 2·Hkv)·hd, d)     split after the matvec into q | k | v
    w_gate_up  = [Wg; Wu]       (2·hidden, d)           split into gate | up
  (a checkpoint with separate wq, wk, wv, w_gate, w_up is fused by concatenating rows, once, at load time)."""
  d, hd = cfg.dim, cfg.hd
  shapes = {"embed": (cfg.vocab, d), "norm": (d,)}
  for i in range(cfg.layers):
    shapes |= {f"{i}.attn_norm": (d,), f"{i}.wqkv": ((cfg.heads + 2 * cfg.kv_heads) * hd, d), f"{i}.wo": (d, cfg.heads * hd),
               f"{i}.ffn_norm": (d,), f"{i}.w_gate_up": (2 * cfg.hidden, d), f"{i}.w_down": (d, cfg.hidden)}
    if cfg.qk_norm: shapes |= {f"{i}.q_norm": (hd,), f"{i}.k_norm": (hd,)}
  if not cfg.tied: shapes["head"] = (cfg.vocab, d)
  return {k: (Tensor.ones(*s, dtype=dtype) if len(s) == 1 else Tensor.randn(*s, dtype=dtype) * std).contiguous().realize()
          for k, s in common.progress(list(shapes.items()), desc="random weights")}


def llama_quantize(w: dict[str, Tensor]) -> dict:
  """int8 weight-only: every matrix (embedding/head included: per-token rows) -> Int8Weight; norms stay fp16.
  The scales are per output row, so quantizing the fused wqkv / w_gate_up gives exactly the codes and scales
  that quantizing wq, wk, wv (or w_gate, w_up) one by one would."""
  return {k: quantize_int8(v) if v.ndim == 2 else v for k, v in w.items()}


def rope_table(cfg: LlamaConfig, max_context: int) -> Tensor:
  """cos and sin of pos · θ^(−2j/hd), j < hd/2, in one (max_context, 2, hd/2) fp32 table (HF's rotate-half
  convention). One table rather than two: a step then reads rope from one buffer, which keeps the rotation
  cheap enough for tinygrad to compute it inside the kernels that read q and k (its fusion heuristic
  materializes an elementwise result that reads more than 3 buffers, and the position variable is one)."""
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.hd, 2, dtype=np.float64) / cfg.hd))
  angles = np.arange(max_context, dtype=np.float64)[:, None] * inv_freq[None, :]
  return Tensor(np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)).realize()


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
  """x / sqrt(mean(x²) + ε) · g, the statistics in fp32 even when x is half. Followed by a matvec, this costs one
  tiny kernel (mean(x²): tinygrad stores a reduction that is broadcast afterwards); the division and the ·g happen
  as the matvec loads x, so the normalized x is never stored."""
  return (x.float() * (x.float().square().mean(-1, keepdim=True) + eps).rsqrt()).cast(x.dtype) * weight


def linear(x: Tensor, w) -> Tensor: return x @ as_weight(w).T      # W (out, in); int8 dequantized inside the matmul


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
  """Rotate pairs (x_j, x_{j+hd/2}) by pos·θ_j.  x (1, heads, 1, hd), cos/sin (1, hd/2)."""
  half = x.shape[-1] // 2
  x1, x2, c, s = x[..., :half].float(), x[..., half:].float(), cos.reshape(1, 1, 1, half), sin.reshape(1, 1, 1, half)
  return (x1 * c - x2 * s).cat(x2 * c + x1 * s, dim=-1).cast(x.dtype)


def llama_decode(cfg: LlamaConfig, w: dict, caches: list[Tensor], rope_cs: Tensor, token: Tensor, pos) -> Tensor:
  """One decode step. token (1, 1) int32, pos an int or a bound Variable (the position of this token);
  caches[i] (2, kv_heads, max_context, hd) holds K and V of layer i. Returns logits (1, vocab) float32.
  Each layer is 11 kernels (the comments number them). Every launch costs a couple of µs on a GPU, so small steps
  are fused where that is free (the softmax below); where fusing would slow the matvecs, it is not (see [10])."""
  H, Hkv, hd, dt = cfg.heads, cfg.kv_heads, cfg.hd, w["norm"].dtype
  x = as_weight(w["embed"])[token].reshape(1, 1, cfg.dim)                                 # one row; int8: q·s of that row
  cos, sin = rope_cs[pos:pos + 1, 0], rope_cs[pos:pos + 1, 1]                              # (1, hd/2)
  for i in range(cfg.layers):
    # [1] mean(x²), [2] the normalized x times the fused [Wq; Wk; Wv]: q, k, v from one matvec
    qkv = linear(rms_norm(x, w[f"{i}.attn_norm"], cfg.norm_eps), w[f"{i}.wqkv"])             # (1, 1, (H + 2·Hkv)·hd)
    q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
    q, k, v = (t.reshape(1, 1, -1, hd).transpose(1, 2) for t in (q, k, v))                  # (1, heads, 1, hd)
    if cfg.qk_norm: q, k = rms_norm(q, w[f"{i}.q_norm"], cfg.norm_eps), rms_norm(k, w[f"{i}.k_norm"], cfg.norm_eps)
    q, k = rope(q, cos, sin), rope(k, cos, sin)       # elementwise on qkv: k's goes into [3], q's into [4]
    # [3] write K, V at pos (its own kernel: a kernel stores to one buffer, and the cache is another one than qkv)
    caches[i][:, :, pos:pos + 1, :].assign(k.cat(v, dim=0).cast(caches[i].dtype))
    keys, values = caches[i][0, :, 0:pos + 1, :].float(), caches[i][1, :, 0:pos + 1, :].float()   # (Hkv, pos+1, hd)
    qg = q.reshape(Hkv, H // Hkv, hd).float()                                               # query heads grouped by their KV head
    # [4] scores, [5] their max per head (a reduction whose result is then broadcast back over positions is
    # always stored first, so the max cannot join [4] or [6])
    scores = (qg @ keys.transpose(-1, -2)) / math.sqrt(hd)                                  # (Hkv, H/Hkv, pos+1)
    e = (scores - scores.max(-1, keepdim=True)).exp()                                       # softmax numerator, never stored
    # [6] softmax(scores) @ V = (Σ_t e_t v_t) / Σ_t e_t: the denominator is summed in the same loop over t as
    # the numerator (e broadcast over hd first), so the normalization costs no kernel of its own
    numerator = e @ values                                                                  # (Hkv, H/Hkv, hd)
    denominator = e.unsqueeze(-1).expand(*e.shape, hd).sum(-2)                              # (Hkv, H/Hkv, hd), Σ_t e_t in every entry
    attn = (numerator / denominator).reshape(1, 1, H * hd).cast(dt)
    # [7] output projection and residual add
    x = x + linear(attn, w[f"{i}.wo"])
    # [8] mean(x²) for the FFN norm, [9] gate and up: ONE matvec over the stacked [Wg; Wu] rows, then [10] silu(gate)·up.
    # [10] is made its own small kernel on purpose: left to fuse, it would be recomputed inside [11] for each of its d rows
    # (silu costs an exp), and splitting gate and up *before* the matvec gives two reductions in one kernel, of which
    # tinygrad parallelizes only the first.
    gate_up = linear(rms_norm(x, w[f"{i}.ffn_norm"], cfg.norm_eps), w[f"{i}.w_gate_up"])     # (1, 1, 2·hidden)
    h = (gate_up[..., :cfg.hidden].silu() * gate_up[..., cfg.hidden:]).contiguous()        # (1, 1, hidden)
    # [11] down projection and residual add
    x = x + linear(h, w[f"{i}.w_down"])
  # the final norm and the output head (mean(x²), then the matvec over the vocabulary); the caller takes the argmax
  return linear(rms_norm(x, w["norm"], cfg.norm_eps), w["embed" if cfg.tied else "head"]).float().reshape(1, cfg.vocab)


def llama_weight_bytes_read(cfg: LlamaConfig, w: dict) -> int:
  """Bytes one decode step reads from the weights: all of them except the embedding table, of which one row
  is read (when tied, the table is read in full as the output head)."""
  total = sum(v.nbytes() for v in w.values())
  emb = w["embed"].nbytes()
  return total - (0 if cfg.tied else emb) + emb // cfg.vocab


def greedy_token(logits: Tensor, row: int = 256) -> Tensor:
  """argmax over the vocabulary, (1, V) float -> (1, 1) int32: the first index of the largest logit.
  Written in two levels of `row`-wide rows: the logits (padded with −inf) are viewed as (V/row, row), each row is
  reduced by its own threads, then the V/row row results. tinygrad's argmax(-1) reduces the 128,256 logits of LLaMA 3
  through its generic split, which leaves 256 threads each walking 501 values: 97 µs per token on an H200 (two passes,
  max then index), 7 % of the whole decode step. The index pass finds the first maximum as max over i of (N − i)
  where the logit equals the max (N = padded length), so the smallest such i wins, as in argmax."""
  V = logits.shape[-1]
  # padded to a multiple of 16 rows, so that the second level splits evenly over threads too (128,256 -> 512 x 256)
  padded = logits.reshape(V).pad(((0, (-V) % (16 * row)),), value=-math.inf).reshape(-1, row)    # (rows, row)
  n = padded.shape[0] * row
  # .contiguous() makes each level a kernel of its own: left to fuse, the levels become one kernel that few threads walk
  best = padded.max(1).contiguous().max().contiguous()                                            # the largest logit
  countdown = Tensor.arange(n, 0, -1, dtype=dtypes.int32).reshape(-1, row)                         # N − i
  first = (padded == best).where(countdown, 0).max(1).contiguous().max()                          # N − (first index of the max)
  return (n - first).reshape(1, 1).cast(dtypes.int32)


class Decoder:
  """The JIT'd greedy decode loop: token_{t+1} = argmax(logits(token_t, pos t)), cache on the device."""
  def __init__(self, cfg: LlamaConfig, w: dict, max_context: int, kv_dtype=dtypes.half):
    self.cfg, self.w, self.max_context = cfg, w, max_context
    self.caches = [Tensor.zeros(2, cfg.kv_heads, max_context, cfg.hd, dtype=kv_dtype).contiguous().realize() for _ in range(cfg.layers)]
    self.rope = rope_table(cfg, max_context)
    self.pos_var = UOp.variable("pos", 0, max_context - 1)
    self.step = TinyJit(self._step)
    self.pos = 0

  def _step(self, token: Tensor, pos) -> tuple[Tensor, Tensor]:
    logits = llama_decode(self.cfg, self.w, self.caches, self.rope, token, pos)
    return logits.realize(), greedy_token(logits).realize()

  def __call__(self, token: Tensor) -> tuple[Tensor, Tensor]:
    if self.pos >= self.max_context: raise UserError(f"context of {self.max_context} tokens is full")
    out = self.step(token, self.pos_var.bind(self.pos))
    self.pos += 1
    return out

  def kernels_per_token(self) -> int:
    """Kernels in the captured step (a CUDA graph counts every kernel inside it)."""
    return jit_kernel_count(self.step)


def stream_add_one(x: Tensor) -> Tensor:
  """y = x + 1, the copy-bandwidth kernel. On a GPU its layout is given explicitly, as a bandwidth test's should be:
  4 floats (one 16-byte load) per thread, 128 threads per block. tinygrad's heuristic picks narrower loads for it, and
  the decode's fraction of "copy bandwidth" would be flattered by a slow copy (H200: 1.65 TB/s heuristic, 3.8 explicit).
  Elsewhere (CPU) tinygrad's own choice, which spreads the loop over the cores."""
  if not Device[Device.DEFAULT].renderer.has_local: return x + 1
  from tinygrad.codegen.opt import Opt, OptOps
  from tinygrad.uop.ops import KernelInfo
  def kernel(y: UOp, src: UOp) -> UOp:
    i = UOp.range(src.shape[0], 0)
    return y[i].store(src[i] + 1).end(i).sink(arg=KernelInfo(name="stream_add_one", opts_to_apply=(Opt(OptOps.UPCAST, 0, 4), Opt(OptOps.LOCAL, 0, 128))))
  return Tensor.empty_like(x).custom_kernel(x, fxn=kernel)[0]


def measure_copy_bandwidth(bench: Bench, mib: int) -> float:
  """STREAM-style 'y = x + 1' over a float32 buffer much larger than any cache: GB/s of read + write."""
  n = mib * 2**20 // 4
  x = Tensor.ones(n).contiguous().realize()
  stream = TinyJit(lambda x: stream_add_one(x).realize())
  return bench.run(f"stream y=x+1 {mib} MiB", lambda: stream(x), rate=(2 * n * 4 / 1e9, "GB/s"), iters=20, max_seconds=3.0)["value"]


def run_llm_decode(args, bench: Bench) -> dict:
  """fp16 and int8 decode on this process's device (MATVEC_FIX as the environment set it)."""
  cfg, n_tokens = args.llm_config, args.llm_tokens
  copy_gbs = measure_copy_bandwidth(bench, args.copy_mib)
  Tensor.manual_seed(args.seed)
  w16 = llama_init(cfg, dtypes.half)
  results = {"config": cfg.__dict__, "params": cfg.params(), "copy_GBps": copy_gbs, "matvec_fix": common.SETUP.matvec_fix, "runs": {}}
  first_logits = {}
  for precision in ("fp16", "int8"):
    w = w16 if precision == "fp16" else llama_quantize(w16)
    if precision == "int8": del w16
    context = n_tokens + 8
    dec = Decoder(cfg, w, max_context=context)
    token = Tensor([[1]], dtype=dtypes.int32).realize()
    logits_first, token = dec(token)
    logits_first = logits_first.numpy().copy()
    weight_bytes = llama_weight_bytes_read(cfg, w)
    kv_read = cfg.kv_bytes(n_tokens // 2)                 # the KV bytes read at the middle of the timed run
    def one_token():
      nonlocal token
      _, token = dec(token)
    rec = bench.run(f"llm decode {precision}", one_token, rate=(1, "tok/s"), warmup=2, iters=max(3, n_tokens - 3),
                    max_seconds=60.0, bytes_per_token=weight_bytes + kv_read)
    gbs = (weight_bytes + kv_read) / rec["median_ms"] * 1e3 / 1e9
    rec["achieved_GBps"], rec["fraction_of_copy_bw"] = gbs, gbs / copy_gbs
    results["runs"][precision] = {"tok_s": rec["value"], "ms_per_token": rec["median_ms"], "kernels_per_token": dec.kernels_per_token(),
                                  "bytes_per_token": weight_bytes + kv_read, "achieved_GBps": gbs, "fraction_of_copy_bw": gbs / copy_gbs,
                                  "weight_bytes": sum(v.nbytes() for v in w.values())}
    first_logits[precision] = logits_first
    del dec
  # int8 vs fp16 on the same first token: how far weight rounding moves the logits
  results["int8_vs_fp16_rel_err"] = float(np.abs(first_logits["int8"] - first_logits["fp16"]).max() / np.abs(first_logits["fp16"]).max())
  return results


def print_llm_table(cfg_name: str, per_fix: dict[str, dict]) -> None:
  print(f"\n### LLaMA-shaped decode ({cfg_name}) on {Device.DEFAULT}: batch 1, greedy, KV cache fp16\n")
  print("| MATVEC_FIX | weights | tok/s | ms/token | kernels/token | bytes/token | achieved GB/s | copy GB/s | % of copy |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for fix, res in per_fix.items():
    if not res.get("available", True):
      print(f"| {fix} | fix not available: {res['reason']} | - | - | - | - | - | - | - |")
      continue
    for p, r in res["runs"].items():
      print(f"| {fix} | {p} | {r['tok_s']:.3g} | {r['ms_per_token']:.3g} | {r['kernels_per_token']} | {r['bytes_per_token'] / 1e6:,.1f} MB |"
            f" {r['achieved_GBps']:.3g} | {res['copy_GBps']:.3g} | {100 * r['fraction_of_copy_bw']:.1f} % |")


def run_llm(args, bench: Bench, summary: dict) -> bool:
  """Run the decode in fresh processes, MATVEC_FIX=0 and =1, so the fix is the only difference."""
  per_fix, out = {}, out_dir(args.out)
  for fix in (("0", "1") if args.matvec_fix == "both" else (args.matvec_fix,)):
    dest = out / f"llm_matvec_fix{fix}.json"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "llm", "--json", str(dest), "--out", args.out, "--seed", str(args.seed),
           "--llm-config", args.llm_config_text, "--llm-tokens", str(args.llm_tokens), "--copy-mib", str(args.copy_mib)]
    print(f"\n--- decode in a subprocess with MATVEC_FIX={fix} ---", flush=True)
    proc = subprocess.run(cmd, env={**os.environ, "MATVEC_FIX": fix})
    if proc.returncode != 0: raise UserError(f"the MATVEC_FIX={fix} decode subprocess failed (exit {proc.returncode}); see its output above")
    doc = json.loads(dest.read_text())
    per_fix[fix] = doc["llm"]
    for r in doc["records"]: bench.records.append({**r, "case": f"{r['case']} (MATVEC_FIX={fix})", "matvec_fix": fix})
  print_llm_table(args.llm_config_text, per_fix)
  if not any(res.get("available", True) for res in per_fix.values()): raise UserError("MATVEC_FIX=1 asked for, but the fix is not available")
  best = max(r["fraction_of_copy_bw"] for res in per_fix.values() if res.get("available", True) for r in res["runs"].values())
  print(f"\nBest achieved bandwidth: {100 * best:.1f} % of the copy bandwidth measured on this device (goal on a GPU: ≥ 50 %).")
  summary["llm"] = per_fix
  # JSON stores a non-finite error as null (e.g. on DEV=NULL, which computes nothing): report it as nan, a FAIL
  errors = [res["int8_vs_fp16_rel_err"] for res in per_fix.values() if res.get("available", True)]
  rel_err = math.nan if None in errors else max(errors)
  return check("int8 vs fp16 first-token logits, max |difference| / max |logit|", rel_err, 0.15, higher_is_better=False)


def llm_worker(args) -> int:
  """Child process of --llm: one MATVEC_FIX setting, results to --json."""
  bench = Bench(PROJECT)
  fix_asked = os.environ.get("MATVEC_FIX", "") == "1"
  print(f"matvec fix: {common.SETUP.matvec_fix}")
  if fix_asked and common.SETUP.matvec_fix != "on":
    doc = {"available": False, "reason": common.SETUP.matvec_fix}
  else:
    doc = run_llm_decode(args, bench)
    bench.print(f"{PROJECT} decode, MATVEC_FIX={os.environ.get('MATVEC_FIX', '')}")
  save_json({"llm": doc, "records": bench.records}, args.json)
  return 0


# ================================================================================================
# 4. --memory: the planner, its validation against tinygrad's allocator, and the table
# ================================================================================================

@dataclass
class ModelSpec:
  """What the planner needs to know about a model."""
  name: str
  params: dict[str, float]                   # dtype -> parameters stored in it
  act_elems: float = 0.0                     # activation elements alive at the inference peak, per sample
  train_act_elems: float = 0.0               # activation elements kept for the backward pass, per sample
  act_dtype: str = "fp16"
  llama: LlamaConfig | None = None
  note: str = ""


def plan(spec: ModelSpec, batch: int = 1, context: int = 0, training: bool = False, kv_dtype: str = "fp16") -> dict[str, float]:
  """Bytes by category, and the bandwidth-bound decode rate at the Orin's effective and peak bandwidth."""
  n = sum(spec.params.values())
  weights = sum(count * BYTES[dt] for dt, count in spec.params.items())
  acts = batch * (spec.train_act_elems if training else spec.act_elems) * BYTES[spec.act_dtype]
  grads = 4.0 * n if training else 0.0
  adam = 8.0 * n if training else 0.0          # m and v in fp32, as tinygrad's Adam keeps them
  kv = spec.llama.kv_bytes(context, batch, BYTES[kv_dtype]) if spec.llama else 0.0
  p = {"params": n, "weights": weights, "activations": acts, "grads": grads, "adam": adam, "kv_cache": kv}
  p["total"] = weights + acts + grads + adam + kv
  if spec.llama:
    bytes_per_weight = weights / n
    per_token = spec.llama.params_read_per_token() * bytes_per_weight + kv
    p["bytes_per_token"] = per_token
    p["tok_s_effective"], p["tok_s_peak"] = ORIN_EFFECTIVE_GBS * 1e9 / per_token, ORIN_PEAK_GBS * 1e9 / per_token
  return p


def cnn_spec(width: int, precision: str = "fp32") -> ModelSpec:
  """The digit CNN: parameters and activations counted from its layer shapes (see cnn_forward)."""
  n = (9 * width + width) + (9 * width * 2 * width + 2 * width) + (2 * width * 25 * 10 + 10)
  # inference peak: the conv1 output (w·26²) and its pooled copy (w·13²) alive together
  act = width * 26 * 26 + width * 13 * 13
  # training keeps what each op needs backwards (input, conv and ReLU outputs, pooled maps, logits), and
  # while the backward pass runs, the gradient of the largest of them (conv1's output) is alive too
  train = 784 + 2 * width * 26 * 26 + width * 13 * 13 + 2 * (2 * width) * 11 * 11 + 2 * width * 25 + 10 + width * 26 * 26
  return ModelSpec(f"digit CNN w={width} ({precision})", {precision: n}, act, train, act_dtype=precision)


def resnet50_counts(hw: int = 224) -> tuple[int, int]:
  """(parameters, conv output elements per image) of torchvision's ResNet-50, from its layer list."""
  params, acts, s = 3 * 64 * 49 + 2 * 64, 64 * (hw // 2) ** 2, hw // 4       # stem conv 7x7/2 + BN, then maxpool/2
  cin = 64
  for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
    for b in range(blocks):
      st = stride if b == 0 else 1
      s_out = s // st
      params += cin * width + 2 * width + 9 * width * width + 2 * width + width * 4 * width + 2 * 4 * width
      acts += width * s * s + width * s_out**2 + 4 * width * s_out**2
      if b == 0:
        params += cin * 4 * width + 2 * 4 * width                                 # projection shortcut
        acts += 4 * width * s_out**2
      cin, s = 4 * width, s_out
  return params + 2048 * 1000 + 1000, acts


def model_table(width: int) -> list[tuple[ModelSpec, dict]]:
  """The models the planner prints, with the setting each is planned at."""
  rows = []
  for name, key, dt in (("LLaMA 3.2 1B", "llama3.2-1b", "fp16"), ("LLaMA 3.2 1B", "llama3.2-1b", "q6_k"), ("LLaMA 3.2 1B", "llama3.2-1b", "int8"),
                        ("LLaMA 3.2 3B", "llama3.2-3b", "fp16"), ("LLaMA 3.1 8B", "llama3.1-8b", "fp16"), ("LLaMA 3.1 8B", "llama3.1-8b", "int8"),
                        ("Qwen3 0.6B", "qwen3-0.6b", "fp16"), ("Qwen3 1.7B", "qwen3-1.7b", "fp16")):
    cfg = LLAMA_CONFIGS[key]
    rows.append((ModelSpec(f"{name} {dt}", {dt: cfg.params()}, llama=cfg), {"context": 8192}))
  r50_params, r50_acts = resnet50_counts()
  rows.append((ModelSpec("ResNet-50 fp16 inference", {"fp16": r50_params}, act_elems=2 * 64 * 112 * 112), {"batch": 32}))
  rows.append((ModelSpec("ResNet-50 fp32 training", {"fp32": r50_params}, train_act_elems=3 * r50_acts, act_dtype="fp32"),
               {"batch": 32, "training": True}))
  # the repo's project models, from their published shapes (anchors.md and each project's issue)
  vgg = sum(ci * co * 9 + co for ci, co in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256),
                                            (256, 512), (512, 512), (512, 512), (512, 512), (512, 512)])
  rows.append((ModelSpec("style-transfer: VGG-19 to conv5_1, 512 px fp32", {"fp32": vgg}, act_elems=2 * 64 * 512 * 512, act_dtype="fp32"),
               {"batch": 1}))
  rows.append((ModelSpec("reinforcement-learning: DQN MLP 4-128-128-2, Adam", {"fp32": 4 * 128 + 128 + 128 * 128 + 128 + 128 * 2 + 2},
                         train_act_elems=4 + 4 * 128 + 2, act_dtype="fp32"), {"batch": 128, "training": True}))
  rows.append((ModelSpec("stereo: SAD cost volume 640x480x64 fp32", {"fp32": 0}, act_elems=640 * 480 * 64 + 2 * 640 * 480,
                         act_dtype="fp32", note="no weights"), {"batch": 1}))
  rows.append((cnn_spec(width), {"batch": 256}))
  rows.append((cnn_spec(width), {"batch": 64, "training": True}))
  return rows


def measure_training_memory(width: int, batch: int) -> tuple[int, int]:
  """tinygrad's own count of live device bytes for CNN weights + Adam + the JIT'd step's buffers."""
  X, Y = Tensor.rand(batch * 4, 1, 28, 28).realize(), Tensor.randint(batch * 4, high=10).realize()
  base = GlobalCounters.mem_used
  w = cnn_init(width)
  for v in w.values(): v.realize()
  stats: dict = {}
  train_classifier(cnn_forward, w, X, Y, steps=3, batch=batch, lr=1e-3, seed=0, desc="memory probe", stats=stats)
  return stats["mem_used"] - base, batch


def validate_planner(args) -> list[tuple[str, float, float]]:
  """(what, planned bytes, measured bytes) for models of this script, measured with GlobalCounters.mem_used."""
  out = []
  # 1. inference weights of the CNN in three precisions: exact byte counts
  w32 = cnn_init(args.width)
  for precision in ("fp32", "fp16", "int8"):
    base = GlobalCounters.mem_used
    w = to_precision(w32, precision)
    measured = GlobalCounters.mem_used - base
    spec = cnn_spec(args.width, precision)
    planned = plan(spec)["weights"] + (2 * (args.width + 2 * args.width + 10) if precision == "int8" else 0)  # + fp16 scales
    out.append((f"CNN weights {precision}", planned, measured))
    del w
  # 2. training: weights, grads, Adam and the JIT's activation buffers
  measured, batch = measure_training_memory(args.width, 64)
  planned = plan(cnn_spec(args.width), batch=batch, training=True)["total"]
  out.append((f"CNN training step b={batch} (Adam)", planned, measured))
  # 3. a transformer's weights + KV cache during decode
  cfg = LLAMA_CONFIGS["tiny" if args.quick else "small"]
  context = 64
  base = GlobalCounters.mem_used
  Tensor.manual_seed(0)
  dec = Decoder(cfg, llama_init(cfg, dtypes.half), max_context=context)
  tok = Tensor([[1]], dtype=dtypes.int32).realize()
  for _ in range(3): _, tok = dec(tok)
  synchronize()
  spec = ModelSpec("llm", {"fp16": cfg.params()}, llama=cfg)
  out.append((f"LLaMA-shaped {'tiny' if args.quick else 'small'} fp16 + KV cache ctx {context}", plan(spec, context=context)["total"],
              GlobalCounters.mem_used - base))
  del dec
  return out


def run_memory(args, summary: dict) -> bool:
  checks = validate_planner(args)
  print(f"\n### planner vs tinygrad's measured memory (GlobalCounters.mem_used, {Device.DEFAULT})\n")
  print("| model | planned | measured | error |\n|---|---:|---:|---:|")
  worst = 0.0
  for name, planned, measured in checks:
    err = (planned - measured) / measured
    worst = max(worst, abs(err))
    print(f"| {name} | {planned / 1e6:,.3f} MB | {measured / 1e6:,.3f} MB | {100 * err:+.1f} % |")
  print(f"\n### what fits on a Jetson Orin AGX 64 GB (planned; decode at {ORIN_EFFECTIVE_GBS:g} GB/s effective, {ORIN_PEAK_GBS:g} GB/s peak)\n")
  print("| model | setting | params | weights GB | act/KV GB | grads+Adam GB | total GB | fits | decode tok/s eff | tok/s peak |")
  print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
  table = []
  for spec, setting in model_table(args.width):
    p = plan(spec, **setting)
    where = ", ".join(f"{k} {v}" for k, v in setting.items() if k != "training") + (" training" if setting.get("training") else "")
    fits = "yes" if p["total"] <= ORIN_MEMORY_GB * 1e9 else "no"
    tok = (f"{p['tok_s_effective']:.1f}", f"{p['tok_s_peak']:.1f}") if "tok_s_effective" in p else ("-", "-")
    print(f"| {spec.name} | {where} | {p['params'] / 1e6:,.2f} M | {p['weights'] / 1e9:.3f} | {(p['activations'] + p['kv_cache']) / 1e9:.3f} |"
          f" {(p['grads'] + p['adam']) / 1e9:.3f} | {p['total'] / 1e9:.3f} | {fits} | {tok[0]} | {tok[1]} |")
    table.append({"model": spec.name, "setting": setting, **p})
  q6 = plan(ModelSpec("q6", {"q6_k": LLAMA_CONFIGS["llama3.2-1b"].params()}, llama=LLAMA_CONFIGS["llama3.2-1b"]), context=512)
  print(f"\nThe reference claim, LLaMA 3.2 1B Q6_K at 36.7 tok/s on the Orin (NV=1), reads {q6['bytes_per_token'] / 1e9:.2f} GB/token: "
        f"{36.7 * q6['bytes_per_token'] / 1e9:.1f} GB/s, {100 * 36.7 / q6['tok_s_effective']:.0f} % of the {ORIN_EFFECTIVE_GBS:g} GB/s bound.")
  summary["memory"] = {"validation": [{"model": n, "planned": p, "measured": m} for n, p, m in checks], "table": table}
  return check("planner vs measured, worst relative error", 100 * worst, 10.0, higher_is_better=False, unit=" %")


# ================================================================================================
# 5. --fusion: kernels and bytes, fused vs one kernel per op; JIT replay vs eager dispatch
# ================================================================================================
# Each expression takes r: identity for the fused version, Tensor.realize for "one kernel per op".

def elementwise_chain(x, r): return r(r(r(r(r(x * 2.0) + 1.0).relu()) * x).exp2())
def matmul_bias_relu(x, w, b, r): return r(r(r(x @ w) + b).relu())
def softmax_rows(x, r):
  m = r(x.max(-1, keepdim=True))
  e = r(r(x - m).exp())
  return r(e / r(e.sum(-1, keepdim=True)))
def layer_norm(x, r):
  mu = r(x.mean(-1, keepdim=True))
  xc = r(x - mu)
  return r(xc * r(r(r(xc * xc).mean(-1, keepdim=True)) + 1e-5).rsqrt())
def conv_block(x, w, b, r): return r(r(r(x.conv2d(w)) + b.reshape(1, -1, 1, 1)).relu().max_pool2d(2))


def fusion_cases(quick: bool) -> list[tuple[str, object, list[Tensor]]]:
  n, m, c = (256, 128, 16) if quick else (1024, 512, 32)
  R = lambda *s: Tensor.randn(*s).realize()
  return [("elementwise chain (5 ops)", elementwise_chain, [R(n, n)]),
          ("matmul + bias + ReLU", matmul_bias_relu, [R(m, m), R(m, m), R(m)]),
          ("softmax over rows", softmax_rows, [R(n, n)]),
          ("layer norm", layer_norm, [R(n, n)]),
          ("conv 3x3 + bias + ReLU + maxpool", conv_block, [R(8, c, 32, 32), R(c, c, 3, 3), R(c)])]


def count_kernels(fn) -> tuple[int, int]:
  """(kernels run, bytes they move by tinygrad's estimate) for realizing fn()."""
  GlobalCounters.reset()
  fn().realize()
  return GlobalCounters.kernel_count, GlobalCounters.global_mem


def run_fusion(args, bench: Bench, summary: dict) -> bool:
  fused_r, unfused_r = (lambda t: t), (lambda t: t.realize())
  rows, results, ok = [], [], True
  for name, expr, inputs in fusion_cases(args.quick):
    fused = lambda: expr(*inputs, fused_r)
    unfused = lambda: expr(*inputs, unfused_r)
    out = fused().realize()
    k_f, b_f = count_kernels(fused)
    k_u, b_u = count_kernels(unfused)
    minimum = sum(t.nbytes() for t in inputs) + out.nbytes()
    jit_f, jit_u = TinyJit(lambda *t: expr(*t, fused_r).realize()), TinyJit(lambda *t: expr(*t, unfused_r).realize())
    t_f = bench.run(f"{name}: fused, JIT", lambda: jit_f(*inputs), **TIMED)["median_ms"]
    t_u = bench.run(f"{name}: unfused, JIT", lambda: jit_u(*inputs), **TIMED)["median_ms"]
    t_e = bench.run(f"{name}: fused, eager", lambda: fused().realize(), **TIMED)["median_ms"]
    rows.append(f"| {name} | {k_f} | {k_u} | {b_f / 1e6:.2f} | {b_u / 1e6:.2f} | {minimum / 1e6:.2f} | {t_f:.3g} | {t_u:.3g} | {t_e:.3g} |")
    results.append({"expr": name, "kernels_fused": k_f, "kernels_unfused": k_u, "bytes_fused": b_f, "bytes_unfused": b_u, "bytes_min": minimum,
                    "ms_fused_jit": t_f, "ms_unfused_jit": t_u, "ms_fused_eager": t_e})
    ok &= k_f < k_u and b_f <= b_u
  print(f"\n### fusion on {Device.DEFAULT}: kernels, MB moved (tinygrad's estimate) and median ms\n")
  print("| expression | kernels fused | unfused | MB fused | MB unfused | MB minimum | ms fused (JIT) | ms unfused (JIT) | ms fused (eager) |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
  summary["fusion"] = results
  return check("expressions where fusion cut kernels and bytes", sum(r["kernels_fused"] < r["kernels_unfused"] for r in results), len(results))


# ================================================================================================
# 6. --beam: the same kernels at BEAM 0, 1, 2, 4, each in a fresh process with the disk cache ignored
# ================================================================================================

def beam_kernels(quick: bool) -> list[tuple[str, object, list[Tensor]]]:
  n, d = (128, 256) if quick or on_cpu() else (1024, 2048)      # a CPU's search compiles every candidate with clang: keep it small
  H = lambda *s: Tensor.randn(*s, dtype=dtypes.half).realize()
  return [(f"matmul {n}x{n} fp16", lambda a, b: a @ b, [H(n, n), H(n, n)]),
          (f"matvec 1x{d} @ {d}x{4 * d} fp16", lambda x, w: x @ w.T, [H(1, d), H(4 * d, d)]),
          (f"softmax {n}x{n} fp32", lambda x: x.softmax(-1), [Tensor.randn(n, n).realize()]),
          ("conv block 8x16x32x32 fp32", lambda x, w: x.conv2d(w, padding=1).relu(), [Tensor.randn(8, 16, 32, 32).realize(), Tensor.randn(16, 16, 3, 3).realize()])]


def beam_worker(args) -> int:
  bench = Bench(PROJECT)
  for name, fn, inputs in beam_kernels(args.quick):
    jit = TinyJit(lambda *t, fn=fn: fn(*t).realize())
    bench.run(f"{name} BEAM={os.environ.get('BEAM', '0')}", lambda: jit(*inputs), warmup=2, **TIMED)
  save_json({"records": bench.records}, args.json)
  return 0


def run_beam(args, bench: Bench, summary: dict) -> bool:
  if os.environ.get("JITBEAM") or os.environ.get("BEAM"):
    print("\n--beam skipped: it sets BEAM itself, so run it without BEAM/JITBEAM in the environment")
    return True
  table, out = {}, out_dir(args.out)
  for level in args.beams:
    dest = out / f"beam{level}.json"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "beam", "--json", str(dest), "--out", args.out] + (["--quick"] if args.quick else [])
    print(f"--- BEAM={level} in a fresh process (IGNORE_BEAM_CACHE=1) ---", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "BEAM": str(level), "IGNORE_BEAM_CACHE": "1"})
    if proc.returncode != 0: raise UserError(f"the BEAM={level} subprocess failed (exit {proc.returncode}); see its output above")
    for r in json.loads(dest.read_text())["records"]:
      bench.records.append(r)
      table.setdefault(r["case"].rsplit(" BEAM=", 1)[0], {})[level] = (r["median_ms"], sum(r["warmup_ms"]) / 1e3)
    print(f"    BEAM={level} process took {time.perf_counter() - t0:.1f} s")
  print(f"\n### BEAM search on {Device.DEFAULT}: median ms (first-call search + compile s)\n")
  print("| kernel | " + " | ".join(f"BEAM={b}" for b in args.beams) + " |\n|---|" + "---:|" * len(args.beams))
  for name, by_level in table.items():
    print(f"| {name} | " + " | ".join(f"{by_level[b][0]:.3g} ms ({by_level[b][1]:.1f} s)" for b in args.beams) + " |")
  summary["beam"] = {name: {str(b): {"median_ms": v[0], "search_s": v[1]} for b, v in lv.items()} for name, lv in table.items()}
  return True


# ================================================================================================
# --bench and main
# ================================================================================================

def run_bench(args, bench: Bench) -> None:
  """The hot paths, for common.compare: matmul, CNN inference in three precisions, stream copy, LLM decode."""
  bench_matmul(bench, args.sizes or ([128] if args.quick else [256, 1024] if on_cpu() else [256, 1024, 4096]))
  Tensor.manual_seed(args.seed)
  w32 = {k: v.realize() for k, v in cnn_init(args.width).items()}     # untrained: speed does not depend on the values
  batch = 64 if args.quick else 256
  for precision in ("fp32", "fp16", "int8"):
    w = to_precision(w32, precision)
    xb = Tensor.rand(batch, 1, 28, 28, dtype=act_dtype(precision)).realize()
    infer = TinyJit(lambda x, w=w: cnn_forward(w, x).realize())
    bench.run(f"cnn {precision} b={batch}", lambda: infer(xb), rate=(batch, "images/s"), **TIMED)
  res = run_llm_decode(args, bench)
  for p, r in res["runs"].items(): print(f"llm decode {p}: {r['achieved_GBps']:.3g} GB/s = {100 * r['fraction_of_copy_bw']:.1f} % of copy bandwidth")


def beam_levels(text: str) -> list[int]:
  """'0,1,2,4' -> [0, 1, 2, 4]"""
  try: levels = sorted({int(v) for v in text.split(",") if v.strip()})
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
  if not levels or levels[0] < 0: raise argparse.ArgumentTypeError(f"{text!r} needs BEAM levels >= 0")
  return levels


def parse_args(argv=None):
  p = common.project_parser(PROJECT, __doc__)
  g = p.add_argument_group("modes (none given: all)")
  for m in MODES: g.add_argument(f"--{m}", action="store_true", help=f"run the {m} mode (see the module docstring)")
  g.add_argument("--all", action="store_true", help="every mode")
  q = p.add_argument_group("settings")
  q.add_argument("--sizes", type=int_list, default=None, help="matmul sizes (default 256..4096 on a GPU, 256..1024 on a CPU)")
  q.add_argument("--width", type=int, default=16, help="digit CNN channels in the first conv (the teacher)")
  q.add_argument("--steps", type=int, default=600, help="training steps for the CNN and each student")
  q.add_argument("--train-size", type=int, default=6000, help="synthetic training digits")
  q.add_argument("--student-width", type=int, default=4, help="channels in the first conv of the student CNN")
  q.add_argument("--temperature", type=positive_float, default=4.0, help="distillation temperature T")
  q.add_argument("--alpha", type=probability, default=0.7, help="weight of the soft-target term (1 - alpha on the hard labels)")
  q.add_argument("--beams", type=beam_levels, default=None, help="BEAM levels to compare (default 0,1,2,4 on a GPU, 0,1,2 on a CPU; --quick 0,1)")
  q.add_argument("--llm-config", dest="llm_config_text", metavar="NAME|SIZES", default=None, help=f"preset ({', '.join(LLAMA_CONFIGS)}) or dim,layers,heads,kv_heads,hidden,vocab (default llama3.2-1b on a GPU, small on a CPU; --quick tiny)")
  q.add_argument("--llm-tokens", type=int, default=32, help="tokens decoded per timed run")
  q.add_argument("--matvec-fix", choices=("0", "1", "both"), default="both", help="--llm: decode with MATVEC_FIX=0, =1 or both (one subprocess each)")
  q.add_argument("--copy-mib", type=int, default=None, help="buffer size for the copy-bandwidth measurement (default 1024 on a GPU, 256 on a CPU)")
  p.add_argument("--worker", choices=("llm", "beam"), default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name in ("width", "steps", "train_size", "student_width", "llm_tokens"):
    if getattr(args, name) <= 0: p.error(f"--{name.replace('_', '-')} must be > 0")
  if args.copy_mib is not None and args.copy_mib <= 0: p.error("--copy-mib must be > 0")
  if args.train_size < 500: p.error("--train-size must be at least 500 (the teacher logits are computed in batches of 500)")
  if args.llm_config_text is not None:
    try: parse_llama_config(args.llm_config_text)
    except argparse.ArgumentTypeError as e: p.error(f"argument --llm-config: {e}")
  if args.llm_tokens + 8 > 100_000: p.error("--llm-tokens is too large")
  args.beams = args.beams or ([0, 1] if args.quick else None)    # None: 0,1,2,4 (0,1,2 on a CPU), settled once the device is known
  return args


def main() -> int:
  args = parse_args()
  common.seed_all(args.seed)
  open_device()
  if args.quick: TIMED.update(iters=5, max_seconds=0.3)
  if args.copy_mib is None: args.copy_mib = 64 if args.quick else 256 if on_cpu() else 1024
  if args.beams is None: args.beams = [0, 1, 2] if on_cpu() else [0, 1, 2, 4]
  # a CPU spends minutes just drawing 1.2 B random weights: default to the small shape there
  args.llm_config_text = args.llm_config_text or ("tiny" if args.quick else "small" if on_cpu() else "llama3.2-1b")
  args.llm_config = parse_llama_config(args.llm_config_text)
  if args.worker == "llm": return llm_worker(args)
  if args.worker == "beam": return beam_worker(args)
  if args.json and (args.json.endswith(os.sep) or os.path.isdir(args.json)): raise UserError(f"--json {args.json} names a folder, not a file")
  if args.load and not os.path.isfile(args.load): raise UserError(f"checkpoint {args.load}: no such file")
  out = out_dir(args.out)
  bench = Bench(PROJECT)
  if args.bench:
    run_bench(args, bench)
    bench.print()
    bench.write_json(args.json)
    return 0
  modes = [m for m in MODES if getattr(args, m)] if not args.all else list(MODES)
  modes = modes or list(MODES)
  summary: dict = {"device": Device.DEFAULT, "modes": modes, "args": {k: v for k, v in vars(args).items() if k != "llm_config"}}
  ok, t0 = True, time.perf_counter()
  data = load_digits(args) if {"quantize", "distill"} & set(modes) else None
  teacher = None
  if "quantize" in modes:
    ok_quantize, teacher = run_quantize(args, bench, out, data, summary)
    ok &= ok_quantize
  if "distill" in modes: ok &= run_distill(args, bench, out, data, summary, teacher)
  if "memory" in modes: ok &= run_memory(args, summary)
  if "fusion" in modes: ok &= run_fusion(args, bench, summary)
  if "beam" in modes: ok &= run_beam(args, bench, summary)
  if "llm" in modes: ok &= run_llm(args, bench, summary)
  summary["wall_s"] = time.perf_counter() - t0
  summary["bench"] = [{k: v for k, v in r.items() if k != "samples_ms"} for r in bench.records]
  save_json(summary, out / "summary.json")
  bench.write_json(args.json)
  print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {summary['wall_s']:.0f} s; tables and figures in {out}/")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
