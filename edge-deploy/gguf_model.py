"""edge-deploy, a real model: a quantized LLM from a GGUF file (llama.cpp's format: LLaMA 3.x, Qwen2/2.5, Qwen3),
its weights kept in their 4-8 bit block formats on the device and dequantized inside each matvec, prompt prefill as
one batched forward, then greedy (or sampled) decoding with a KV cache in a TinyJit, the text streamed as it comes.
Run it as `python3 edge-deploy/llm.py --gguf PATH --prompt TEXT` (llm.py's --gguf mode); gguf_file.py reads the
container, gguf_weights.py keeps the blocks on the device, gguf_tokenizer.py turns text into token ids and back.

The forward pass, shapes for T tokens at positions start..start+T−1 (T = prompt length in prefill, 1 in decode):
    x = E[tokens]                                                (T, d)   one row of the token table per token
    per layer:  h = RMSNorm(x) = x / sqrt(mean(x²) + ε) · g      ε = {arch}.attention.layer_norm_rms_epsilon
                q = h Wqᵀ (+ bq),  k = h Wkᵀ (+ bk),  v = h Wvᵀ (+ bv)       (H, T, hd), (Hkv, T, hd); biases: Qwen2
                q, k = RMSNorm per head (Qwen3: attn_q_norm, attn_k_norm), then RoPE at their positions
                K, V cache[start : start+T] = k, v;   S = start + T keys in all
                a = softmax(q Kᵀ/√hd + causal mask) V       query head j reads KV head j // (H/Hkv): grouped-query attention
                                                             (RMSNorm, RoPE and attention: decoder_math.py, shared with llm.py)
                x += a Woᵀ;   x += (silu(h Wgᵀ) ⊙ h Wuᵀ) Wdᵀ with h = RMSNorm(x)
    logits = RMSNorm(x_last) Wheadᵀ                              (1, V); no output.weight: Whead = E (tied)
The causal mask lets query t (position start + t) see keys s ≤ start + t: prefill computes all T rows with matmuls in
one pass, decode is the same code with T = 1 (no mask needed) and start a bound Variable, so one captured TinyJit
replays for every position; the token is a Variable too, and its embedding row a view of the packed table.

RoPE rotates pairs of q and k coordinates by pos·θ_j, θ_j = base^(−2j/hd) / f_j (j < hd/2, base = {arch}.rope.freq_base;
f_j = rope_freqs.weight, LLaMA 3.1/3.2's "llama3" frequency factors, else 1; "linear" scaling divides pos by its factor):
    (x₁, x₂) -> (x₁ cos − x₂ sin, x₂ cos + x₁ sin)
Which coordinates pair up is the classic bug. Hugging Face's LLaMA pairs (x_j, x_{j+hd/2}) ("rotate half", NEOX style);
llama.cpp's converter permutes the rows of Wq and Wk of a llama model per head (row 2j <- row j, row 2j+1 <- row
j + hd/2; convert_hf_to_gguf.py LlamaModel.permute), so that in a GGUF llama the pairs are adjacent, (x_{2j}, x_{2j+1}),
and llama.cpp rotates them so (rope type NORM). Qwen2 and Qwen3 are stored unpermuted and rotate (x_j, x_{j+hd/2})
(rope type NEOX). ROPE_PAIRS below says which; the tests compare against a numpy forward in Hugging Face's convention.

Decode is bandwidth-bound (llm.py's docstring): every weight byte is read once per token, so
    bytes/token = Σ packed weight bytes (layers, final norm, output head) + one embedding row + the KV cache read
    achieved GB/s = bytes/token / (s/token),   compared with the copy bandwidth y = x + 1 measured in the same run
A Q4_K matrix is 4.5 bits per weight, 3.6x fewer bytes than fp16, but a Q4_K_M file keeps the head and some attn_v and
ffn_down in Q6_K: make_gguf.py's LLaMA 3.2 1B files are 2.475 GB in F16 and 0.803 GB in Q4_K_M, 3.1x fewer bytes.
To get near that bound on a GPU each matvec needs wide loads and enough threads per row: llm.py --gguf turns on the
backend's matvec fix (MATVEC_FIX=1 unless set: common/env.py installs it; MATVEC_FIX=0 leaves it off), and
load_weights stacks the rows of projections that read the same input and share a block type, [Wq; Wk; Wv] and
[Wgate; Wup], so each group is one matvec (never two matvecs in one kernel, which tinygrad would run with one thread
per row): 11 kernels per layer as in llm.py, the softmax's denominator summed inside the P·V loop
(decoder_math.attention; 12 where q, k and v differ in type, as in the Q4_K_M layers whose attn_v is Q6_K), 7 more
per token.

Run it
  python3 edge-deploy/llm.py --gguf model.gguf --prompt "The capital of France is" --max-tokens 32
  python3 edge-deploy/llm.py --gguf model.gguf --chat --prompt "Why is the sky blue?" --temperature 0.7 --top-p 0.9
  NV=1 python3 edge-deploy/llm.py --gguf Llama-3.2-1B-Instruct-Q4_K_M.gguf --chat --prompt Hi --json out/gguf.json
Block types: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K (what Q4_K_M, Q6_K and Q8_0 files use when every row length is a
multiple of 256); a tensor of another type (Q5_0, Q5_K, ...) is refused before loading, naming it.
The report: prefill tok/s (its second run: the first compiles), decode tok/s and ms/token (median over the tokens
after the JIT's two warm-up steps), kernels and bytes per token (counted and by tinygrad's estimate), achieved GB/s
and its share of the copy bandwidth; --json writes them as common.bench records.
"""
from __future__ import annotations
import argparse, contextlib, math, sys, time
from dataclasses import dataclass

import edge_common as ec          # first: it imports common, which settles DEV before tinygrad reads it
import common
import numpy as np
from tinygrad import Device, Tensor, GlobalCounters, dtypes
from common import UserError, check
from common.bench import Bench, Timing
import gguf_file as gf
from gguf_weights import linear, load_weight, load_vector, stack_rows
from decoder_math import Decoder, DecoderConfig, attention, rms_norm, rope

ROPE_PAIRS = {"llama": "adjacent pairs", "qwen2": "halves", "qwen3": "halves"}


# ---- the math (RMSNorm, RoPE, attention: decoder_math.py) ---------------------------------------

def projections(h: Tensor, w: dict, i: int, names: tuple[str, ...], sizes: tuple[int, ...]) -> list[Tensor]:
  """h Wᵀ (+ b) for the projections `names` of layer i that read the same h: one matvec over their stacked rows when
  load_weights stacked them (same block type), else one each, all but the last stored: never two matvecs in one
  kernel (silu(gate)·up would be one), which tinygrad gives one thread per row. The last may fuse into its reader."""
  if (stacked:=f"{i}.{'_'.join(names)}") in w: ys = list(linear(h, w[stacked]).split(list(sizes), dim=-1))
  else: ys = [y.contiguous() if j < len(names) - 1 else y for j, y in enumerate(linear(h, w[f"{i}.{n}"]) for n in names)]
  return [y if (b:=w.get(f"{i}.{n}_bias")) is None else y + b for y, n in zip(ys, names)]


def transformer_layer(cfg: DecoderConfig, w: dict, i: int, x: Tensor, cache: Tensor, cos: Tensor, sin: Tensor, start, T: int) -> Tensor:
  """One block: attention with its KV cache write, then the gated FFN, each with a residual. x (T, d) float32."""
  H, Hkv, hd = cfg.heads, cfg.kv_heads, cfg.hd
  h = rms_norm(x, w[f"{i}.attn_norm"], cfg.norm_eps)
  q, k, v = projections(h, w, i, ("q", "k", "v"), (H * hd, Hkv * hd, Hkv * hd))
  q, k, v = (p.reshape(T, heads, hd).transpose(0, 1) for p, heads in ((q, H), (k, Hkv), (v, Hkv)))   # (heads, T, hd)
  if cfg.qk_norm: q, k = rms_norm(q, w[f"{i}.q_norm"], cfg.norm_eps), rms_norm(k, w[f"{i}.k_norm"], cfg.norm_eps)
  q, k = rope(q, cos, sin, cfg.rope_pairs), rope(k, cos, sin, cfg.rope_pairs)
  cache[:, :, start:start + T, :].assign(k.stack(v).cast(cache.dtype))
  x = x + linear(attention(cfg, q, cache, start, T), w[f"{i}.o"])
  h = rms_norm(x, w[f"{i}.ffn_norm"], cfg.norm_eps)
  gate, up = projections(h, w, i, ("gate", "up"), (cfg.hidden, cfg.hidden))
  # silu(gate)·up stored once (contiguous): fused into the down matvec it would be recomputed for each of its d rows
  gated = (gate.silu() * up).contiguous()
  return x + linear(gated, w[f"{i}.down"])


def forward(cfg: DecoderConfig, w: dict, caches: list[Tensor], rope_cs: Tensor, x: Tensor, start, T: int, all_logits: bool = False) -> Tensor:
  """x: the T tokens' embeddings (T, d) float32; start: an int or a bound Variable.
  -> logits (T, V) with all_logits, else those of the last position (1, V), float32."""
  cos, sin = rope_cs[start:start + T, 0], rope_cs[start:start + T, 1]                                     # (T, hd/2)
  for i in range(cfg.layers): x = transformer_layer(cfg, w, i, x, caches[i], cos, sin, start, T)
  if not all_logits: x = x[T - 1:T]
  return linear(rms_norm(x, w["norm"], cfg.norm_eps), w["head"])


# ---- the model: the file's weights, the KV cache, prefill and the JIT'd decode step -----------

class GGUFModel(Decoder):
  """The file's weights on the device, the KV caches, prefill and the JIT'd decode step (decoder_math.Decoder).
  f and cfg as open_checked returns them: the file is parsed and checked once."""
  def __init__(self, f: gf.GGUFFile, cfg: DecoderConfig, max_context: int, kv_dtype=dtypes.float32):
    self.file, self.w = f, load_weights(f, cfg)
    freq_factors = f.vector("rope_freqs.weight", cfg.hd // 2) if "rope_freqs.weight" in f.tensors else None
    super().__init__(cfg, max_context, kv_dtype, freq_factors)

  def forward(self, tokens, start, T: int, all_logits: bool = False) -> Tensor:
    """The embeddings: prefill's ids are host ints, so their T rows are dequantized from the file's bytes on the host
    (a gather on the device would read the whole table); decode's token is a Variable, its row a view of the packed table."""
    if isinstance(tokens, list): x = Tensor(self.file.rows("token_embd.weight", tokens))
    else: x = self.w["embed"].rows(slice(tokens, tokens + 1)).dequantize()
    return forward(self.cfg, self.w, self.caches, self.rope, x, start, T, all_logits)

  def weight_bytes_per_token(self) -> int:
    """Every weight but the token table, the output head in full (the table itself when tied) and one table row."""
    rest = sum(v.nbytes() for k, v in self.w.items() if k not in ("embed", "head"))
    return rest + self.w["head"].nbytes() + self.w["embed"].row_nbytes()

  def kv_bytes_read(self, pos: int) -> int:
    """K and V of positions 0..pos, every layer: what attention reads at position pos."""
    return 2 * self.cfg.layers * self.cfg.kv_heads * self.cfg.hd * (pos + 1) * self.caches[0].dtype.itemsize


def config_from_file(f: gf.GGUFFile) -> DecoderConfig:
  """The hyperparameters from the metadata; an architecture, rope scaling or shape this code does not run is one line."""
  meta = f.metadata
  arch = meta.get("general.architecture")
  if not isinstance(arch, str): raise UserError(f"{f.path}: its metadata has no general.architecture")
  if arch not in ROPE_PAIRS: raise UserError(f"{f.path}: architecture {arch!r} is not supported (llama, qwen2 and qwen3 are)")

  def key(name: str, default=None, kind=int):
    v = meta.get(f"{arch}.{name}", default)
    if v is None: raise UserError(f"{f.path}: metadata {arch}.{name} is missing")
    if not isinstance(v, kind) or isinstance(v, bool) or v <= 0: raise UserError(f"{f.path}: metadata {arch}.{name} = {v!r} is not a positive number")
    return v

  dim, heads = key("embedding_length"), key("attention.head_count")
  head_dim = key("attention.key_length", dim // heads)
  if key("rope.dimension_count", head_dim) != head_dim or key("attention.value_length", head_dim) != head_dim or head_dim % 2:
    raise UserError(f"{f.path}: partial rotary or value heads of another size than the key heads are not supported")
  if meta.get(f"{arch}.expert_count", 0): raise UserError(f"{f.path}: mixture-of-experts models are not supported")
  # a factor with no type is linear (llama.cpp's default), as is the older rope.scale_linear key
  factor = meta.get(f"{arch}.rope.scaling.factor", meta.get(f"{arch}.rope.scale_linear"))
  scaling = meta.get(f"{arch}.rope.scaling.type", "none" if factor is None else "linear")
  if scaling not in ("none", "linear"): raise UserError(f"{f.path}: rope scaling {scaling!r} is not supported (none, linear)")
  if scaling == "linear" and (not isinstance(factor, (int, float)) or factor <= 0):
    raise UserError(f"{f.path}: rope scaling factor {factor!r} is not a positive number")
  kv_heads = key("attention.head_count_kv", heads)
  if heads % kv_heads: raise UserError(f"{f.path}: {heads} query heads do not split into groups over {kv_heads} KV heads")
  table = f.info("token_embd.weight").shape
  if len(table) != 2 or table[1] != dim: raise UserError(f"{f.path}: token_embd.weight has shape {table}, expected (vocab, {dim})")
  return DecoderConfig(dim, key("block_count"), heads, kv_heads, key("feed_forward_length"), table[0], tied="output.weight" not in f.tensors,
                       head_dim=head_dim, qk_norm="blk.0.attn_q_norm.weight" in f.tensors, rope_theta=key("rope.freq_base", 10000.0, float),
                       norm_eps=key("attention.layer_norm_rms_epsilon", kind=float), rope_pairs=ROPE_PAIRS[arch],
                       rope_linear=float(factor) if scaling == "linear" else 1.0,
                       qkv_bias="blk.0.attn_q.bias" in f.tensors, arch=arch, context=key("context_length", 4096))


def tensor_shapes(cfg: DecoderConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
  """Our weight name -> (GGUF tensor name, its numpy shape): every tensor the forward pass reads."""
  d, hd, q, kv = cfg.dim, cfg.hd, cfg.heads * cfg.hd, cfg.kv_heads * cfg.hd
  out = {"embed": ("token_embd.weight", (cfg.vocab, d)), "norm": ("output_norm.weight", (d,))}
  if not cfg.tied: out["head"] = ("output.weight", (cfg.vocab, d))
  for i in range(cfg.layers):
    layer = {"attn_norm": ("attn_norm.weight", (d,)), "q": ("attn_q.weight", (q, d)), "k": ("attn_k.weight", (kv, d)),
             "v": ("attn_v.weight", (kv, d)), "o": ("attn_output.weight", (d, q)), "ffn_norm": ("ffn_norm.weight", (d,)),
             "gate": ("ffn_gate.weight", (cfg.hidden, d)), "up": ("ffn_up.weight", (cfg.hidden, d)), "down": ("ffn_down.weight", (d, cfg.hidden))}
    if cfg.qkv_bias: layer |= {"q_bias": ("attn_q.bias", (q,)), "k_bias": ("attn_k.bias", (kv,)), "v_bias": ("attn_v.bias", (kv,))}
    if cfg.qk_norm: layer |= {"q_norm": ("attn_q_norm.weight", (hd,)), "k_norm": ("attn_k_norm.weight", (hd,))}
    out |= {f"{i}.{k}": (f"blk.{i}.{name}", shape) for k, (name, shape) in layer.items()}
  return out


def check_tensors(f: gf.GGUFFile, cfg: DecoderConfig) -> int:
  """Every tensor the model reads is present, of its shape and of a block type decoded here, before anything is loaded.
  -> their bytes."""
  total, optional = 0, {"rope_freqs.weight": (cfg.hd // 2,)} if "rope_freqs.weight" in f.tensors else {}
  for name, shape in [*tensor_shapes(cfg).values(), *optional.items()]:
    info = f.info(name)
    gf.check_supported(info, f.path)
    if math.prod(info.shape) != math.prod(shape) or (len(shape) == 2 and info.shape != shape):
      raise UserError(f"{f.path}: tensor {name} has shape {info.shape}, expected {shape}")
    total += info.nbytes
  return total


def open_checked(path) -> tuple[gf.GGUFFile, DecoderConfig, int]:
  """The file opened and checked as far as it can be before a weight is loaded: header, architecture and shape,
  every tensor the model reads (present, of its shape and a block type decoded here), a tokenizer in the metadata.
  -> (the file, its config, the bytes of the weights)."""
  with naming(path):
    f = gf.GGUFFile(path)
    cfg = config_from_file(f)
    weight_bytes = check_tensors(f, cfg)
  if not isinstance(f.metadata.get("tokenizer.ggml.tokens"), list):
    raise UserError(f"{f.path} has no tokenizer (no tokenizer.ggml.tokens in its metadata)")
  return f, cfg, weight_bytes


@contextlib.contextmanager
def naming(path):
  """A one-line error from inside (a block size, the tokenizer) names the file, when it does not already."""
  try: yield
  except UserError as e:
    if str(path) in str(e): raise
    raise UserError(f"{path}: {e}") from None


def load_weights(f: gf.GGUFFile, cfg: DecoderConfig) -> dict:
  w: dict = {}
  for key, (name, shape) in common.progress(list(tensor_shapes(cfg).items()), desc="loading weights"):
    w[key] = load_weight(f, name) if len(shape) == 2 else load_vector(f, name, shape[0])
  if cfg.tied: w["head"] = w["embed"]
  for i in range(cfg.layers):
    for names in (("q", "k", "v"), ("gate", "up")):      # projections of one input in one block type: rows stacked
      if len({w[f"{i}.{n}"].kind for n in names}) == 1: w[f"{i}.{'_'.join(names)}"] = stack_rows([w.pop(f"{i}.{n}") for n in names])
  return w


# ---- generation: sampling, streaming, timing ----------------------------------------------------

def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
  """Greedy at temperature 0; else softmax(logits / T) cut to the smallest set of most likely tokens whose probability
  reaches top_p (nucleus sampling), renormalized, and drawn from."""
  if temperature == 0: return int(np.argmax(logits))
  z = logits.astype(np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-p, kind="stable")
  keep = order[np.cumsum(p[order]) - p[order] < top_p]         # each token whose predecessors hold less than top_p
  return int(rng.choice(keep, p=p[keep] / p[keep].sum()))


@dataclass
class Generation:
  ids: list[int]                  # the generated tokens
  text: str
  prefill_s: Timing               # warm-up: the first prefill (compiles), sample: the second
  decode_s: Timing                # warm-up: the JIT's first two steps, samples: the rest
  kv_bytes: list[int]             # KV bytes read at each steady step
  stopped: str                    # "eos", "max tokens"
  finite: float                   # the share of the prompt's logits that are finite numbers
  last_logits: np.ndarray         # the prompt's last position's logits (V,), from the full prefill


def generate(model: GGUFModel, tok, prompt_ids: list[int], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, out=None) -> Generation:
  """Prefill the prompt (twice: the first run compiles its kernels), then decode up to max_tokens tokens, streaming
  the text to `out`. The device token of the greedy argmax is read back each step: the text needs it anyway."""
  rng, out = np.random.default_rng(seed), out or sys.stdout
  prefill_times = []
  for _ in range(2):
    model.pos = 0
    t0 = time.perf_counter()
    logits = model.prefill(prompt_ids).numpy()
    prefill_times.append(time.perf_counter() - t0)
  stream, ids, steps, kv, stopped = tok.decode_stream(), [], [], [], "max tokens"
  token = sample(logits[-1], temperature, top_p, rng)
  while True:
    if token in tok.eos_ids:
      stopped = "eos"
      break
    ids.append(token)
    out.write(stream(token))
    out.flush()
    if len(ids) == max_tokens: break
    t0 = time.perf_counter()
    logits_t, greedy = model.step(token)
    token = int(greedy.item()) if temperature == 0 else sample(logits_t.numpy()[0], temperature, top_p, rng)
    steps.append(time.perf_counter() - t0)
    kv.append(model.kv_bytes_read(model.pos - 1))
  out.write(stream.flush() + "\n")                                          # a character the last token left unfinished
  return Generation(ids, tok.decode(ids), Timing(prefill_times[:1], prefill_times[1:]), Timing(steps[:2], steps[2:]), kv[2:], stopped,
                    float(np.isfinite(logits).mean()), logits[-1].copy())


def split_prefill_error(model: GGUFModel, ids: list[int], full_last: np.ndarray) -> float:
  """The success check: the prompt's last logits from prefill(ids[:-1]) then step(ids[-1]) against the full prefill's,
  max |difference| / max |logit|. Both paths compute the same numbers through other kernels (matmuls over T rows and a
  causal mask against the JIT'd matvec step reading the cache), so a cache written at the wrong place, a wrong mask or
  a wrong position makes them differ; fp32 accumulation in both keeps a working model near 1e-6."""
  model.pos = 0
  if len(ids) > 1: model.prefill(ids[:-1])
  last = model.step(ids[-1])[0].numpy()[0]
  return float(np.abs(last - full_last).max() / np.abs(full_last).max())


def step_counters(model: GGUFModel, token: int) -> tuple[int, int]:
  """(kernels, bytes moved by tinygrad's estimate) of one replayed decode step; the step advances the position."""
  GlobalCounters.reset()
  model.step(token)[1].item()
  return GlobalCounters.kernel_count, GlobalCounters.global_mem


# --- plumbing: report, flags, main ---------------------------------------------------------------

# llama.cpp's LLAMA_FTYPE_*: general.file_type
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M",
              13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def file_kind(f: gf.GGUFFile) -> dict:
  """What tells two runs of one model apart: the file, its general.file_type, and the block types of its tensors."""
  kinds = [info.type_name for info in f.tensors.values()]
  ft = f.metadata.get("general.file_type")
  return {"file": f.path.name, "file_type": FILE_TYPES.get(ft, "not stated" if ft is None else f"type {ft}"),
          "block_types": ", ".join(f"{k} x{kinds.count(k)}" for k in sorted(set(kinds), key=lambda k: -kinds.count(k)))}


def report(model: GGUFModel, gen: Generation, prompt_len: int, copy_gbs: float, bench: Bench, counters: tuple[int, int] | None,
           matvec_fix: str = "off") -> dict:
  """The run's figures as a dict, as common.bench records in `bench` (prefill, decode; the case names the file), and
  printed as a table."""
  pre, kind, stem = gen.prefill_s.samples_s[0], file_kind(model.file), model.file.path.stem
  bench.add(f"gguf prefill {prompt_len} tokens {stem}", gen.prefill_s, rate=(prompt_len, "tok/s"), **kind)
  res = {**kind, "arch": model.cfg.arch, "prompt_tokens": prompt_len, "generated_tokens": len(gen.ids), "stopped": gen.stopped,
         "prefill_s": pre, "prefill_first_call_s": gen.prefill_s.warmup_s[0], "prefill_tok_s": prompt_len / pre,
         "weight_bytes": sum(v.nbytes() for k, v in model.w.items() if not (k == "head" and model.cfg.tied)),
         "weight_bytes_per_token": model.weight_bytes_per_token(), "copy_GBps": copy_gbs, "matvec_fix": matvec_fix}
  rows = [("prompt tokens, prefill tok/s", f"{prompt_len}, {res['prefill_tok_s']:.4g} (first call, compiling: {gen.prefill_s.warmup_s[0]:.3g} s)"),
          ("generated tokens", f"{len(gen.ids)} (stopped: {gen.stopped})"),
          ("weight bytes / token", f"{res['weight_bytes_per_token'] / 1e6:,.2f} MB"),
          ("matvec fix", matvec_fix if Device[Device.DEFAULT].renderer.has_local else f"{matvec_fix} (no effect: no GPU threads here)")]
  if gen.decode_s.samples_s:
    ms, kv = gen.decode_s.median * 1e3, float(np.mean(gen.kv_bytes))
    per_token = res["weight_bytes_per_token"] + kv
    gbs = per_token / ms * 1e3 / 1e9
    res |= {"decode_tok_s": 1e3 / ms, "ms_per_token": ms, "kv_bytes_per_token": kv, "bytes_per_token": per_token, "achieved_GBps": gbs,
            "fraction_of_copy_bw": gbs / copy_gbs, "kernels_per_token": model.kernels_per_token()}
    rows += [("decode tok/s, ms / token", f"{res['decode_tok_s']:.4g}, {ms:.4g} (median of {len(gen.decode_s.samples_s)} tokens)"),
             ("KV bytes / token (mean)", f"{kv / 1e6:,.3f} MB"), ("kernels / token", str(res["kernels_per_token"])),
             ("achieved GB/s, copy GB/s", f"{gbs:.4g}, {copy_gbs:.4g}: {100 * gbs / copy_gbs:.1f} % of copy")]
    if counters is not None:
      res["tinygrad_estimated_bytes_per_token"] = counters[1]
      rows.append(("tinygrad's estimate of bytes / token", f"{counters[1] / 1e6:,.2f} MB"))
    bench.add(f"gguf decode {stem}", gen.decode_s, rate=(1, "tok/s"), **res)
  else: rows.append(("decode", "too few tokens for steady-state figures (the JIT warms up on the first two steps)"))
  print(f"\n### {kind['file']} ({model.cfg.arch}, {kind['file_type']}: {kind['block_types']}; {model.cfg.layers} layers, dim {model.cfg.dim})"
        f" on {Device.DEFAULT}\n")
  print("| figure | value |\n|---|---:|")
  for name, value in rows: print(f"| {name} | {value} |")
  return res


def add_flags(p) -> None:
  from common.cli import existing_file, int_range, nonnegative_float, float_range
  g = p.add_argument_group("a real model from a GGUF file (gguf_model.py)")
  g.add_argument("--gguf", metavar="PATH", type=existing_file, default=None,
                 help="run this GGUF model (llama, qwen2, qwen3) instead of the random-weight decode")
  g.add_argument("--prompt", default="The capital of France is", help="text to continue (with --chat: the user's message)")
  g.add_argument("--max-tokens", type=int_range(1, 1 << 20), default=64, help="tokens to generate at most (EOS stops earlier)")
  g.add_argument("--temperature", type=nonnegative_float, default=0.0, help="sampling temperature; 0: greedy")
  g.add_argument("--top-p", type=float_range(1e-6, 1.0), default=1.0,
                 help="nucleus sampling: draw from the most likely tokens that hold this much probability")
  g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template (a user turn)")


GGUF_FLAGS, LEVER_FLAGS = ("prompt", "max_tokens", "temperature", "top_p", "chat"), ("bench", "out", "llm_config", "llm_tokens", "matvec_fix")


def chosen(p, args) -> bool:
  """Is this llm.py run the --gguf mode? A flag of the other mode is refused (it would be silently ignored)."""
  mine, other = (GGUF_FLAGS, LEVER_FLAGS) if args.gguf else (LEVER_FLAGS, GGUF_FLAGS)
  for flag in other:
    if flag in args.given: p.error(f"--{flag.replace('_', '-')} {'does not apply to --gguf' if args.gguf else 'is a setting of --gguf'}")
  if "top_p" in args.given and args.temperature == 0: p.error("--top-p needs --temperature above 0 (at 0 decoding is greedy)")
  return args.gguf is not None


def main(args: argparse.Namespace) -> int:
  f, cfg, weight_bytes = open_checked(args.gguf)
  from gguf_tokenizer import Tokenizer
  with naming(f.path): tok = Tokenizer.from_gguf_metadata(f.metadata)
  if tok.vocab_size != cfg.vocab: raise UserError(f"{f.path}: the tokenizer has {tok.vocab_size} tokens, token_embd.weight {cfg.vocab} rows")
  ids = tok.encode(tok.chat_prompt(args.prompt) if args.chat else args.prompt)
  if not ids: raise UserError("the prompt is empty (and the model adds no BOS token)")
  if len(ids) + args.max_tokens > cfg.context:
    raise UserError(f"the prompt ({len(ids)} tokens) and --max-tokens {args.max_tokens} exceed the model's context of {cfg.context}")
  kv_dtype = dtypes.float32 if ec.on_cpu() else dtypes.half                 # no native half arithmetic on a CPU
  context = len(ids) + args.max_tokens
  copy_mib = args.copy_mib or (64 if args.quick else 256 if ec.on_cpu() else 1024)
  ec.check_fits(weight_bytes + 2 * cfg.layers * cfg.kv_heads * cfg.hd * context * kv_dtype.itemsize + 2 * copy_mib * 2**20,
                f"{f.path.name} with a context of {context}")
  bench = Bench(ec.PROJECT)
  fix = common.SETUP.matvec_fix              # installed by common/env.py: llm.py sets MATVEC_FIX=1 for --gguf unless it is set
  copy_gbs = ec.measure_copy_bandwidth(bench, copy_mib)
  model = GGUFModel(f, cfg, context, kv_dtype)
  print(f"prompt: {len(ids)} tokens{' (chat template around the text)' if args.chat else ''}\n{args.prompt if args.chat else tok.decode(ids)}",
        end="", flush=True)
  gen = generate(model, tok, ids, args.max_tokens, args.temperature, args.top_p, args.seed)
  counters = step_counters(model, gen.ids[-1]) if gen.decode_s.samples_s and model.pos < context else None
  report(model, gen, len(ids), copy_gbs, bench, counters, fix)
  bench.write_json(args.json)
  split = split_prefill_error(model, ids, gen.last_logits)
  ok = check("share of the prompt's logits that are finite", gen.finite, 1.0)
  return 0 if ok & check("prefill(prompt[:-1]) + step(last) vs the full prefill, max |difference| / max |logit|", split, 1e-3,
                         higher_is_better=False) else 1
