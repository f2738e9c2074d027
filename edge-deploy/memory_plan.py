#!/usr/bin/env python3
"""edge-deploy, the memory lever: a planner that says what fits on a Jetson Orin and how fast it can decode,
checked against tinygrad's own allocator. Part of edge_optimize.py (--memory); runs alone too.

A Jetson Orin AGX has 64 GB shared by CPU and GPU and 204.8 GB/s of DRAM bandwidth (≈ 102 GB/s is what real
kernels reach). Those two numbers, not FLOPs, decide most of edge deployment; here they are inputs to the planner,
never results. The planner counts bytes by category:
    weights      = Σ_dtype params(dtype) · bytes(dtype)       (fp32 4, fp16/bf16 2, int8 1, Q6_K 6.5625/8)
    activations  = batch · elements alive per sample · bytes   (inference peak, or what backward keeps)
    training     + grads (4 B/param) + Adam's m and v (2 · 4 B/param)
    KV cache     = 2 · layers · kv_heads · head_dim · context · batch · bytes
and, for a transformer decoding at batch 1 (every weight read once per token),
    tok/s ≤ bandwidth / (weight bytes read per token + KV bytes read)
It is validated against GlobalCounters.mem_used for models this repo builds (the digit CNN's weights in three
precisions, a training step with Adam, a LLaMA-shaped decoder with its KV cache), each within 10 %, and then
prints a table for LLaMA 3.2 1B/3B, LLaMA 3.1 8B, Qwen3 0.6B/1.7B, ResNet-50 and the repo's project models.

Run it
  python3 edge-deploy/memory_plan.py            # seconds, any device (--quick validates on the tiny LLM shape)
Outputs: the tables, and summary.json in --out. It times nothing, so it has no --bench or --json.
"""
from __future__ import annotations
import math, sys
from dataclasses import dataclass
from pathlib import Path

import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
from tinygrad import Tensor, Device, GlobalCounters, dtypes
from common import check
from common.device import synchronize
from llm import LLAMA_CONFIGS, Decoder, LlamaConfig, llama_init

# Jetson Orin AGX 64GB: datasheet memory and peak bandwidth, and the effective bandwidth the repo's reference
# measurements reach. Inputs to the planner, not measurements of this run.
ORIN_MEMORY_GB, ORIN_EFFECTIVE_GBS, ORIN_PEAK_GBS = 64.0, 102.0, 204.8
BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "q6_k": 6.5625 / 8}   # Q6_K: 6.5625 bits per weight
MAX_ERROR_PCT = 10.0


@dataclass
class MemoryConfig:
  width: int = 16                 # the digit CNN whose memory is measured
  llm_shape: str = "small"        # the LLaMA shape whose weights + KV cache are measured
  context: int = 64
  seed: int = 0


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


# ---- the planner ------------------------------------------------------------------------------

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
    per_token = spec.llama.params_read_per_token() * weights / n + kv
    p["bytes_per_token"] = per_token
    p["tok_s_effective"], p["tok_s_peak"] = ORIN_EFFECTIVE_GBS * 1e9 / per_token, ORIN_PEAK_GBS * 1e9 / per_token
  return p


def cnn_spec(width: int, precision: str = "fp32") -> ModelSpec:
  """The digit CNN: parameters and activations counted from its layer shapes (see edge_common.cnn_forward)."""
  # inference peak: the conv1 output (w·26²) and its pooled copy (w·13²) alive together
  act = width * 26 * 26 + width * 13 * 13
  # training keeps what each op needs backwards (input, conv and ReLU outputs, pooled maps, logits), and
  # while the backward pass runs, the gradient of the largest of them (conv1's output) is alive too
  train = 784 + 2 * width * 26 * 26 + width * 13 * 13 + 2 * (2 * width) * 11 * 11 + 2 * width * 25 + 10 + width * 26 * 26
  # what common.conv's form for a layer on this device (conv_form) keeps besides: the gemm form stores each layer's
  # patch matrix, Ho·Wo·C·9 per image, kept for ∂L/∂w; a layer that also passes ∂L/∂x down (conv2) has ∂L/∂patches
  # and its channels-first copy for the col2im sum alive in the backward pass too, 3 patch matrices in all. The
  # Winograd form (a GPU's) stores the transformed input instead, a 6×6 tile per 4×4 output tile and channel,
  # 36·C·⌈Ho/4⌉² per image, and its gradient beside it where ∂L/∂x is passed down (tinygrad's _conv2d_winograd
  # realizes both transforms; modelled from its code, not measured on a GPU)
  from common.conv import conv_form
  for cin, out_hw, passes_grad in ((1, 26, False), (width, 11, True)):
    form = conv_form((3, 3), (1, 1), 1, 1, cin)
    if form == "gemm": train += (3 if passes_grad else 1) * out_hw * out_hw * cin * 9
    elif form == "winograd": train += (2 if passes_grad else 1) * 36 * cin * math.ceil(out_hw / 4) ** 2
  return ModelSpec(f"digit CNN w={width} ({precision})", {precision: ec.cnn_param_count(width)}, act, train, act_dtype=precision)


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
  # the repo's project models, from their published shapes
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


# ---- validation against tinygrad's allocator ---------------------------------------------------

def measure_training_memory(width: int, batch: int) -> int:
  """tinygrad's own count of live device bytes for CNN weights + Adam + the JIT'd step's buffers."""
  X, Y = Tensor.rand(batch * 4, 1, 28, 28).realize(), Tensor.randint(batch * 4, high=10).realize()
  base = GlobalCounters.mem_used
  w = ec.cnn_init(width)
  stats: dict = {}
  ec.train_classifier(ec.cnn_forward, w, X, Y, steps=3, batch=batch, lr=1e-3, seed=0, desc="memory probe", stats=stats)
  return stats["mem_used"] - base


def validate_planner(cfg: MemoryConfig) -> list[tuple[str, float, float]]:
  """(what, planned bytes, measured bytes) for models of this project, measured with GlobalCounters.mem_used."""
  out = []
  w32 = ec.cnn_init(cfg.width)
  for precision in ("fp32", "fp16", "int8"):             # inference weights in three precisions: exact byte counts
    base = GlobalCounters.mem_used
    w = ec.to_precision(w32, precision)
    measured = GlobalCounters.mem_used - base
    scales = 2 * (cfg.width + 2 * cfg.width + 10) if precision == "int8" else 0    # one fp16 scale per output channel
    out.append((f"CNN weights {precision}", plan(cnn_spec(cfg.width, precision))["weights"] + scales, measured))
    del w
  batch = 64                                              # training: weights, grads, Adam and the JIT's activation buffers
  out.append((f"CNN training step b={batch} (Adam)", plan(cnn_spec(cfg.width), batch=batch, training=True)["total"],
              measure_training_memory(cfg.width, batch)))
  model = LLAMA_CONFIGS[cfg.llm_shape]                    # a transformer's weights + KV cache during decode
  base = GlobalCounters.mem_used
  Tensor.manual_seed(cfg.seed)
  dec = Decoder(model, llama_init(model, dtypes.half), max_context=cfg.context)
  tok = Tensor([[1]], dtype=dtypes.int32).realize()
  for _ in range(3): _, tok = dec(tok)
  synchronize()
  planned = plan(ModelSpec("llm", {"fp16": model.params()}, llama=model), context=cfg.context)["total"]
  out.append((f"LLaMA-shaped {cfg.llm_shape} fp16 + KV cache ctx {cfg.context}", planned, GlobalCounters.mem_used - base))
  return out


def planner_ok(checks: list[tuple[str, float, float]]) -> bool:
  worst = max(abs(planned - measured) / measured for _, planned, measured in checks)
  return check("planner vs measured, worst relative error", 100 * worst, MAX_ERROR_PCT, higher_is_better=False, unit=" %")


# --- plumbing: tables, CLI, main ---------------------------------------------------------------

def print_validation(checks: list[tuple[str, float, float]]) -> None:
  print(f"\n### planner vs tinygrad's measured memory (GlobalCounters.mem_used, {Device.DEFAULT})\n")
  print("| model | planned | measured | error |\n|---|---:|---:|---:|")
  for name, planned, measured in checks:
    print(f"| {name} | {planned / 1e6:,.3f} MB | {measured / 1e6:,.3f} MB | {100 * (planned - measured) / measured:+.1f} % |")


def print_table(width: int) -> list[dict]:
  print(f"\n### what fits on a Jetson Orin AGX 64 GB (planned; decode at {ORIN_EFFECTIVE_GBS:g} GB/s effective, {ORIN_PEAK_GBS:g} GB/s peak)\n")
  print("| model | setting | params | weights GB | act/KV GB | grads+Adam GB | total GB | fits | decode tok/s eff | tok/s peak |")
  print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
  table = []
  for spec, setting in model_table(width):
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
  return table


def run(cfg: MemoryConfig, summary: dict) -> bool:
  checks = validate_planner(cfg)
  print_validation(checks)
  table = print_table(cfg.width)
  summary["memory"] = {"validation": [{"model": n, "planned": p, "measured": m} for n, p, m in checks], "table": table}
  return planner_ok(checks)


def add_flags(p) -> None:
  g = p.add_argument_group("memory planner (memory_plan.py)")
  ec.add_flag(g, "--width", type=ec.int_range(1, 1024), default=16, help="digit CNN channels in the first conv (the teacher)")


def config(p, args) -> MemoryConfig:
  return MemoryConfig(width=args.width, llm_shape="tiny" if args.quick else "small", seed=args.seed)


def main() -> int:
  p = common.project_parser(ec.PROJECT, __doc__, quick_help="validate on the tiny LLM shape (seconds)", save_help=None)
  add_flags(p)
  args = p.parse_args()
  if args.bench: p.error("--bench: the planner times nothing (quantize.py and llm.py have --bench; fusion_beam.py is timings throughout)")
  if args.json: p.error("--json writes timing records and the planner times nothing; its tables go to summary.json in --out")
  from common.cli import check_out_dir
  from common.files import save_json
  check_out_dir(args)
  summary: dict = {"device": Device.DEFAULT}
  ok = run(config(p, args), summary)
  save_json(summary, Path(args.out) / "summary.json")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
