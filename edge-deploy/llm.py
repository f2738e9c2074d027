#!/usr/bin/env python3
"""edge-deploy, the decode lever: a LLaMA-shaped transformer decoding one token at a time with a KV cache, timed
against the copy bandwidth of the same device. Part of edge_optimize.py (--llm); runs alone too.

At batch 1 every weight is read once per token by a matrix-vector product, so decode is bandwidth-bound:
    tok/s ≤ BW / (bytes of weights read per token + KV bytes read)
and "achieved GB/s" = bytes read per token / time per token is the figure to compare with the copy bandwidth
(y = x + 1 over a buffer far larger than any cache, measured in the same run). Weights are random (speed and
bytes do not depend on what they know), in fp16 and as int8 with per-row scales (edge_common.py).

One step, shapes at batch 1: x (1,1,d); q (1,H,1,hd); K,V cache (2,Hkv,ctx,hd) per layer; logits (1,V).
    h = RMSNorm(x) = x / sqrt(mean(x²) + ε) · g
    q|k|v = h Wqkvᵀ,  rope on q and k (pairs (x_j, x_{j+hd/2}) rotated by pos·θ^(−2j/hd)),  k, v -> cache at pos
    attn = softmax(q Kᵀ / √hd) V over positions 0..pos (query heads grouped over their KV head: GQA)
    x += attn Woᵀ;   x += (silu(h Wgᵀ) · h Wuᵀ) Wdownᵀ with h = RMSNorm(x);   logits = RMSNorm(x) Wheadᵀ
Laid out for a GPU, where every kernel launch costs ~2 µs even inside a CUDA graph: 11 kernels per layer
(LLaMA 3.2 1B: 184 per token), numbered in llama_decode:
  [1] mean(x²) (the division and ·g happen as [2] loads x)  [2] q|k|v, one matvec over wqkv = [Wq; Wk; Wv]
  [3] rope(k), v into the cache   [4] scores, rope(q) applied as q is read   [5] max per head
  [6] softmax·V = (Σ_t e_t v_t) / Σ_t e_t, e_t = exp(s_t − max), the sum sharing P·V's loop   [7] x += Wo·attn
  [8] mean(x²)   [9] gate|up, one matvec over [Wg; Wu]   [10] silu(gate)·up (fused into [11] it would be
  recomputed for every row)   [11] x += Wdown·h
plus the embedding row, the final norm and head, and a two-level argmax (greedy_token). RMSNorm, RoPE, attention,
greedy_token and the JIT'd KV-cache Decoder live in decoder_math.py, shared with gguf_model.py's real models.
The matvecs want the backend's matvec fix (MATVEC_FIX=1, on by default on a Jetson; backend.install_matvec_fix):
16-byte loads, 32 threads per row. --matvec-fix both decodes once with MATVEC_FIX=0 and once with =1; a setting
this process does not have runs in a fresh `python3 edge-deploy/llm.py --matvec-fix N` with MATVEC_FIX=N.

Run it
  NV=1 python3 edge-deploy/llm.py                        # LLaMA 3.2 1B shape on a Jetson, fix off and on (JITBEAM=2: searched)
  python3 edge-deploy/llm.py --quick                     # the tiny shape, seconds on a CPU
  python3 edge-deploy/llm.py --bench --json out/llm.json # decode and copy records, this process's MATVEC_FIX
  python3 edge-deploy/llm.py --gguf model.gguf --prompt Hi --max-tokens 32   # a real quantized model: gguf_model.py
--llm-config: llama3.2-1b (GPU default), llama3.2-3b, llama3.1-8b, qwen3-0.6b, qwen3-1.7b, small (CPU default),
tiny (--quick), or dim,layers,heads,kv_heads,hidden,vocab. Success: int8 first-token logits differ from fp16 (the
int8 weights are used) by at most 15 % of the largest logit. Measured figures (H200, CPU): README.md.
"""
from __future__ import annotations
import argparse, json, math, os, subprocess, sys
from dataclasses import dataclass
from pathlib import Path

# --gguf wants the backend's matvec fix (gguf_model.py): common/env.py installs it when common is imported with
# MATVEC_FIX=1, the one switch for both modes (MATVEC_FIX=0 leaves it off)
if any(a == "--gguf" or a.startswith("--gguf=") for a in sys.argv[1:]): os.environ.setdefault("MATVEC_FIX", "1")
import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
import numpy as np
from tinygrad import Tensor, Device, dtypes
from common import UserError, check
from common.bench import Bench
from edge_common import Int8Weight, as_weight, linear, quantize_int8
import decoder_math               # the math shared with gguf_model.py: RMSNorm, RoPE, attention, greedy_token, Decoder
from decoder_math import DecoderConfig as LlamaConfig, attention, greedy_token, rms_norm, rope  # noqa: F401  (greedy_token: llm.greedy_token)

SETTINGS = ("0", "1")


LLAMA_CONFIGS = {
  "llama3.2-1b": LlamaConfig(2048, 16, 32, 8, 8192, 128256),
  "llama3.2-3b": LlamaConfig(3072, 28, 24, 8, 8192, 128256),
  "llama3.1-8b": LlamaConfig(4096, 32, 32, 8, 14336, 128256, tied=False),
  "qwen3-0.6b": LlamaConfig(1024, 28, 16, 8, 3072, 151936, head_dim=128, qk_norm=True, rope_theta=1e6, norm_eps=1e-6),
  "qwen3-1.7b": LlamaConfig(2048, 28, 16, 8, 6144, 151936, head_dim=128, qk_norm=True, rope_theta=1e6, norm_eps=1e-6),
  "small": LlamaConfig(512, 4, 8, 2, 1536, 8192),
  "tiny": LlamaConfig(64, 2, 4, 2, 128, 256),
}


@dataclass
class DecodeConfig:
  model_name: str                 # a preset name or the dim,layers,... text
  model: LlamaConfig
  tokens: int = 32                # tokens decoded per timed run
  copy_mib: int = 256             # buffer of the copy-bandwidth measurement
  settings: tuple[str, ...] = SETTINGS   # MATVEC_FIX values to decode with
  seed: int = 0
  quick: bool = False


# ---- the math: one decode step ----------------------------------------------------------------

def llama_decode(cfg: LlamaConfig, w: dict, caches: list[Tensor], rope_cs: Tensor, token: Tensor, pos) -> Tensor:
  """One decode step. token (1, 1) int32, pos an int or a bound Variable (the position of this token);
  caches[i] (2, kv_heads, max_context, hd) holds K and V of layer i. Returns logits (1, vocab) float32."""
  H, Hkv, hd, dt = cfg.heads, cfg.kv_heads, cfg.hd, w["norm"].dtype
  x = as_weight(w["embed"])[token].reshape(1, 1, cfg.dim)                                 # one row; int8: q·s of that row
  cos, sin = rope_cs[pos:pos + 1, 0], rope_cs[pos:pos + 1, 1]                              # (1, hd/2), rotate-half pairs
  for i in range(cfg.layers):
    # [1] mean(x²), [2] the normalized x times the fused [Wq; Wk; Wv]: q, k, v from one matvec
    qkv = linear(rms_norm(x, w[f"{i}.attn_norm"], cfg.norm_eps), w[f"{i}.wqkv"])             # (1, 1, (H + 2·Hkv)·hd)
    q, k, v = qkv.split([H * hd, Hkv * hd, Hkv * hd], dim=-1)
    q, k, v = (t.reshape(1, 1, -1, hd).transpose(1, 2) for t in (q, k, v))                  # (1, heads, 1, hd)
    if cfg.qk_norm: q, k = rms_norm(q, w[f"{i}.q_norm"], cfg.norm_eps), rms_norm(k, w[f"{i}.k_norm"], cfg.norm_eps)
    q, k = rope(q, cos, sin), rope(k, cos, sin)       # elementwise on qkv: k's goes into [3], q's into [4]
    # [3] write K, V at pos (its own kernel: a kernel stores to one buffer, and the cache is another one than qkv)
    caches[i][:, :, pos:pos + 1, :].assign(k.cat(v, dim=0).cast(caches[i].dtype))
    # [4]-[6] attention, [7] output projection and residual add
    x = x + linear(attention(cfg, q, caches[i], pos, 1).reshape(1, 1, H * hd).cast(dt), w[f"{i}.wo"])
    # [8] mean(x²), [9] gate and up: ONE matvec over the stacked [Wg; Wu] rows, then [10] silu(gate)·up as its own
    # kernel: left to fuse, it would be recomputed inside [11] for each of its d rows (silu costs an exp), and
    # splitting gate and up *before* the matvec gives two reductions in one kernel, of which tinygrad parallelizes
    # only the first
    gate_up = linear(rms_norm(x, w[f"{i}.ffn_norm"], cfg.norm_eps), w[f"{i}.w_gate_up"])     # (1, 1, 2·hidden)
    h = (gate_up[..., :cfg.hidden].silu() * gate_up[..., cfg.hidden:]).contiguous()        # (1, 1, hidden)
    x = x + linear(h, w[f"{i}.w_down"])                                                     # [11]
  # the final norm and the output head (mean(x²), then the matvec over the vocabulary); the caller takes the argmax
  return linear(rms_norm(x, w["norm"], cfg.norm_eps), w["embed" if cfg.tied else "head"]).float().reshape(1, cfg.vocab)


# ---- the model: weights and the JIT'd decode loop ---------------------------------------------

def llama_init(cfg: LlamaConfig, dtype=dtypes.half, std: float = 0.02) -> dict[str, Tensor]:
  """Random weights N(0, 0.02²), norms 1: a real model's bytes and shapes, not its knowledge. W is (out, in).
  Projections that read the same input are stored fused, rows stacked, so one matvec computes them all:
    wqkv = [Wq; Wk; Wv]  ((H + 2·Hkv)·hd, d),   w_gate_up = [Wg; Wu]  (2·hidden, d)
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
  """int8 weight-only: every matrix (embedding/head included) -> Int8Weight; norms stay fp16. The scales are per output
  row, so the fused wqkv / w_gate_up get exactly the codes and scales that wq, wk, wv (w_gate, w_up) would alone."""
  return {k: quantize_int8(v) if v.ndim == 2 else v for k, v in w.items()}


def llama_weight_bytes_read(cfg: LlamaConfig, w: dict) -> int:
  """Bytes one decode step reads from the weights: all of them except the embedding table, of which one row
  is read (when tied, the table is read in full as the output head)."""
  total = sum(v.nbytes() for v in w.values())
  emb = w["embed"].nbytes()
  return total - (0 if cfg.tied else emb) + emb // cfg.vocab


class Decoder(decoder_math.Decoder):
  """The JIT'd greedy decode loop: token_{t+1} = argmax(logits(token_t, pos t)), the token staying on the device."""
  def __init__(self, cfg: LlamaConfig, w: dict[str, Tensor | Int8Weight], max_context: int, kv_dtype=dtypes.half):
    super().__init__(cfg, max_context, kv_dtype)
    self.w = w

  def forward(self, tokens, start, T: int, all_logits: bool = False) -> Tensor:
    return llama_decode(self.cfg, self.w, self.caches, self.rope, tokens, start)


# ---- measuring: the decode against the copy bandwidth (edge_common.measure_copy_bandwidth) -------

def time_decode(cfg: DecodeConfig, w: dict, precision: str, bench: Bench, copy_gbs: float) -> tuple[dict, np.ndarray]:
  """Decode cfg.tokens tokens greedily; -> (figures, the first token's logits)."""
  dec = Decoder(cfg.model, w, max_context=cfg.tokens + 8)
  logits_first, token = dec(Tensor([[1]], dtype=dtypes.int32).realize())
  logits_first = logits_first.numpy().copy()
  per_token = llama_weight_bytes_read(cfg.model, w) + cfg.model.kv_bytes(cfg.tokens // 2)   # KV read at the middle of the run
  def one_token():
    nonlocal token
    _, token = dec(token)
  rec = bench.run(f"llm decode {precision}", one_token, rate=(1, "tok/s"), warmup=2, iters=max(3, cfg.tokens - 3), max_seconds=60.0,
                  bytes_per_token=per_token)
  gbs = per_token / rec["median_ms"] * 1e3 / 1e9
  rec["achieved_GBps"], rec["fraction_of_copy_bw"] = gbs, gbs / copy_gbs
  return {"tok_s": rec["value"], "ms_per_token": rec["median_ms"], "kernels_per_token": dec.kernels_per_token(), "bytes_per_token": per_token,
          "achieved_GBps": gbs, "fraction_of_copy_bw": gbs / copy_gbs, "weight_bytes": sum(v.nbytes() for v in w.values())}, logits_first


def decode_here(cfg: DecodeConfig, bench: Bench) -> dict:
  """fp16 and int8 decode on this process's device, with the MATVEC_FIX this process has."""
  copy_gbs = ec.measure_copy_bandwidth(bench, cfg.copy_mib)
  Tensor.manual_seed(cfg.seed)
  w16 = llama_init(cfg.model, dtypes.half)
  res = {"config": cfg.model.__dict__, "params": cfg.model.params(), "copy_GBps": copy_gbs, "matvec_fix": common.SETUP.matvec_fix, "runs": {}}
  first = {}
  res["runs"]["fp16"], first["fp16"] = time_decode(cfg, w16, "fp16", bench, copy_gbs)
  w8 = llama_quantize(w16)
  del w16
  res["runs"]["int8"], first["int8"] = time_decode(cfg, w8, "int8", bench, copy_gbs)
  # int8 vs fp16 on the same first token: how far weight rounding moves the logits
  res["int8_vs_fp16_rel_err"] = float(np.abs(first["int8"] - first["fp16"]).max() / np.abs(first["fp16"]).max())
  return res


# ---- success check ----------------------------------------------------------------------------

def decode_ok(per_fix: dict[str, dict]) -> bool:
  """int8 logits must differ from fp16 (else the int8 weights were not used) by at most 15 % of the largest logit.
  JSON keeps a non-finite error as null (DEV=NULL computes nothing): that is nan here, a FAIL."""
  errors = [res["int8_vs_fp16_rel_err"] for res in per_fix.values() if res.get("available", True)]
  err = math.nan if None in errors else max(errors)
  return check("int8 vs fp16 first-token logits differ, max |difference| / max |logit|", err, 1e-6) & \
    check("int8 vs fp16 first-token logits, max |difference| / max |logit|", err, 0.15, higher_is_better=False)


# --- plumbing: MATVEC_FIX settings in fresh processes, reports, CLI, main -------------------------

def runs_here(fix: str) -> bool:
  """Can this process decode with MATVEC_FIX=fix? When its environment set that value, or (unset) its state is it."""
  env = os.environ.get("MATVEC_FIX")
  return env == fix if env is not None else (common.SETUP.matvec_fix == "on") == (fix == "1")


def decode_setting(cfg: DecodeConfig, fix: str, bench: Bench, out: Path) -> dict:
  """One MATVEC_FIX setting: here when this process has it, else in `python3 llm.py --matvec-fix fix` started
  with MATVEC_FIX=fix (the fix is installed when common is imported, so it needs a fresh process)."""
  if runs_here(fix):
    if fix == "1" and common.SETUP.matvec_fix != "on": return {"available": False, "reason": common.SETUP.matvec_fix}
    here = Bench(ec.PROJECT)
    res = decode_here(cfg, here)
    bench.records += [{**r, "case": f"{r['case']} (MATVEC_FIX={fix})", "matvec_fix": fix} for r in here.records]
    return res
  child_out = out / f"llm_matvec_fix{fix}"
  summary, records = child_out / "summary.json", child_out / "bench.json"
  for stale in (summary, records): stale.unlink(missing_ok=True)
  cmd = [sys.executable, os.path.abspath(__file__), "--matvec-fix", fix, "--llm-config", cfg.model_name, "--llm-tokens", str(cfg.tokens),
         "--copy-mib", str(cfg.copy_mib), "--seed", str(cfg.seed), "--out", str(child_out), "--json", str(records)]
  print(f"\n--- decode in a fresh process with MATVEC_FIX={fix} ---", flush=True)
  proc = subprocess.run(cmd + (["--quick"] if cfg.quick else []), env={**os.environ, "MATVEC_FIX": fix})
  try: res = json.loads(summary.read_text())["llm"][fix]
  except (OSError, ValueError, KeyError): raise UserError(f"the MATVEC_FIX={fix} decode process failed (exit {proc.returncode}); see above")
  if records.exists(): bench.records += json.loads(records.read_text())["records"]     # the child named their setting already
  return res


def print_table(cfg: DecodeConfig, per_fix: dict[str, dict]) -> None:
  print(f"\n### LLaMA-shaped decode ({cfg.model_name}) on {Device.DEFAULT}: batch 1, greedy, KV cache fp16\n")
  print("| MATVEC_FIX | weights | tok/s | ms/token | kernels/token | bytes/token | achieved GB/s | copy GB/s | % of copy |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for fix, res in per_fix.items():
    if not res.get("available", True):
      print(f"| {fix} | fix not available: {res['reason']} | - | - | - | - | - | - | - |")
      continue
    for p, r in res["runs"].items():
      print(f"| {fix} | {p} | {r['tok_s']:.3g} | {r['ms_per_token']:.3g} | {r['kernels_per_token']} | {r['bytes_per_token'] / 1e6:,.1f} MB |"
            f" {r['achieved_GBps']:.3g} | {res['copy_GBps']:.3g} | {100 * r['fraction_of_copy_bw']:.1f} % |")


def run(cfg: DecodeConfig, bench: Bench, out: Path, summary: dict) -> bool:
  """The lever's demo: every MATVEC_FIX setting asked for, one table, the check (main reports no available setting)."""
  per_fix = summary["llm"] = {fix: decode_setting(cfg, fix, bench, out) for fix in cfg.settings}
  print_table(cfg, per_fix)
  available = [res for res in per_fix.values() if res.get("available", True)]
  if not available: return False
  best = max(r["fraction_of_copy_bw"] for res in available for r in res["runs"].values())
  print(f"\nBest achieved bandwidth: {100 * best:.1f} % of the copy bandwidth measured on this device.")
  return decode_ok(per_fix)


def parse_llama_config(text: str) -> LlamaConfig:
  if text in LLAMA_CONFIGS: return LLAMA_CONFIGS[text]
  try: dim, layers, heads, kv_heads, hidden, vocab = (int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is neither a preset ({', '.join(LLAMA_CONFIGS)}) nor 'dim,layers,heads,kv_heads,hidden,vocab'")
  if min(dim, layers, heads, kv_heads, hidden, vocab) <= 0 or dim % heads or heads % kv_heads or (dim // heads) % 2:
    raise argparse.ArgumentTypeError(f"{text!r}: need positive sizes, dim divisible by heads, heads by kv_heads, and an even head dim")
  return LlamaConfig(dim, layers, heads, kv_heads, hidden, vocab)


def add_flags(p) -> None:
  g = p.add_argument_group("LLM decode (llm.py)")
  ec.add_flag(g, "--llm-config", metavar="NAME|SIZES", default=None, help=f"preset ({', '.join(LLAMA_CONFIGS)}) or "
              "dim,layers,heads,kv_heads,hidden,vocab (default llama3.2-1b on a GPU, small on a CPU; --quick tiny)")
  ec.add_flag(g, "--llm-tokens", type=ec.int_range(1, 100_000), default=32, help="tokens decoded per timed run")
  ec.add_flag(g, "--matvec-fix", choices=("0", "1", "both"), default="both",
              help="decode with MATVEC_FIX=0, =1 or both (a setting this process lacks runs in a fresh one)")
  ec.add_flag(g, "--copy-mib", type=ec.int_range(1, 1 << 20), default=None,
              help="buffer for the copy-bandwidth measurement (default 1024 on a GPU, 256 on a CPU; --quick 64)")


def config(p, args) -> DecodeConfig:
  """The flags as a DecodeConfig; a shape or buffer that cannot fit in memory is one line here, before any allocation."""
  # a CPU spends minutes just drawing 1.2 B random weights: default to the small shape there
  name = args.llm_config or ("tiny" if args.quick else "small" if ec.on_cpu() else "llama3.2-1b")
  try: model = parse_llama_config(name)
  except argparse.ArgumentTypeError as e: p.error(f"argument --llm-config: {e}")
  if args.bench and "matvec_fix" in args.given:
    p.error("--bench decodes with this process's MATVEC_FIX (set it in the environment); --matvec-fix is for the demo")
  copy_mib = args.copy_mib or (64 if args.quick else 256 if ec.on_cpu() else 1024)
  # fp16 weights and their int8 copy alive together, two KV caches' worth, the copy buffers x and y
  need = 3 * model.params() + 2 * model.kv_bytes(args.llm_tokens + 8) + 2 * copy_mib * 2**20
  ec.check_fits(need, f"--llm-config {name} with --copy-mib {copy_mib}", p)
  settings = SETTINGS if args.matvec_fix == "both" else (args.matvec_fix,)
  return DecodeConfig(name, model, args.llm_tokens, copy_mib, settings, args.seed, args.quick)


def main() -> int:
  p = common.project_parser(ec.PROJECT, __doc__, save_help=None)
  add_flags(p)
  import gguf_model                 # --gguf PATH: a real model from a GGUF file instead of random weights
  gguf_model.add_flags(p)
  args = p.parse_args()
  if gguf_model.chosen(p, args): return gguf_model.main(args)
  cfg = config(p, args)
  bench = Bench(ec.PROJECT)
  if args.bench:
    decode_here(cfg, bench)
    bench.print()
    bench.write_json(args.json)
    return 0
  from common.cli import check_out_dir
  from common.files import save_json
  check_out_dir(args)
  summary: dict = {"device": Device.DEFAULT, "llm_config": cfg.model_name}
  ok = run(cfg, bench, Path(args.out), summary)
  save_json(summary, Path(args.out) / "summary.json")
  bench.write_json(args.json)
  if not any(res.get("available", True) for res in summary["llm"].values()):
    raise UserError(f"MATVEC_FIX=1 asked for, but the matvec fix is not available ({summary['llm']['1']['reason']})")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
