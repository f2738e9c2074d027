"""edge-deploy: the decoder math that llm.py's random-weight decode and gguf_model.py's real GGUF models share,
written once: the model's shape (DecoderConfig), RMSNorm, the RoPE table and rotation, causal grouped-query attention,
the two-level greedy argmax, and the KV-cache Decoder whose one TinyJit'd step replays at every position.

Not a script: llm.py and gguf_model.py import it from beside themselves. Shapes for T query positions start..start+T−1
(T = 1 in decode), H query heads over Hkv KV heads of size hd, S = start + T keys:
    RMSNorm(x) = x / sqrt(mean(x²) + ε) · g
    RoPE: each pair of coordinates rotated by pos·θ_j, θ_j = base^(−2j/hd) / f_j / linear factor, j < hd/2
        (x₁, x₂) -> (x₁ cos − x₂ sin, x₂ cos + x₁ sin);  pairs (x_j, x_{j+hd/2}) ("halves": Hugging Face, Qwen,
        llm.py) or (x_{2j}, x_{2j+1}) ("adjacent pairs": a GGUF llama, whose Wq/Wk rows llama.cpp's converter permuted)
    attention: a = softmax(q Kᵀ/√hd + causal mask) V, computed as (Σ_t e_t v_t) / Σ_t e_t with e_t = exp(s_t − max):
        the denominator is summed in the P·V loop, so the softmax costs no kernel of its own (3 kernels: scores, max,
        P·V). Query head j reads KV head j // (H/Hkv) (grouped-query attention); query t sees keys s ≤ start + t.
"""
from __future__ import annotations
import math
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, TinyJit, UOp, dtypes
from common import UserError
from common.bench import jit_kernel_count


@dataclass(frozen=True)
class DecoderConfig:
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
  rope_pairs: str = "halves"    # or "adjacent pairs" (a GGUF llama)
  rope_linear: float = 1.0      # "linear" rope scaling: positions divided by this
  qkv_bias: bool = False        # Qwen2
  arch: str = "llama"
  context: int = 0              # the context the model was trained for (0: not known)

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


def rope_table(cfg: DecoderConfig, max_context: int, freq_factors: np.ndarray | None = None) -> Tensor:
  """cos and sin of pos·θ_j, j < hd/2, in one (max_context, 2, hd/2) fp32 table. One table, not two: tinygrad
  materializes an elementwise result that reads more than 3 buffers (the position variable is one), and with one
  table the rotation stays inside the kernels that read q and k."""
  theta = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.hd, 2, dtype=np.float64) / cfg.hd))
  theta = theta / cfg.rope_linear / (1.0 if freq_factors is None else freq_factors)
  angles = np.arange(max_context, dtype=np.float64)[:, None] * theta[None, :]
  return Tensor(np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)).realize()


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
  """x / sqrt(mean(x²) + ε) · g, the statistics in fp32 even when x is half. Followed by a matvec, this costs one
  tiny kernel (mean(x²): tinygrad stores a reduction that is broadcast afterwards); the division and the ·g happen
  as the matvec loads x, so the normalized x is never stored."""
  return (x.float() * (x.float().square().mean(-1, keepdim=True) + eps).rsqrt()).cast(x.dtype) * weight


def rope(x: Tensor, cos: Tensor, sin: Tensor, pairs: str = "halves") -> Tensor:
  """Rotate the coordinate pairs of x (..., T, hd) by their angles, cos/sin (T, hd/2), in fp32."""
  half, dt = x.shape[-1] // 2, x.dtype
  if pairs == "halves":
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return (x1 * cos - x2 * sin).cat(x2 * cos + x1 * sin, dim=-1).cast(dt)
  p = x.reshape(*x.shape[:-1], half, 2).float()
  x1, x2 = p[..., 0], p[..., 1]
  return (x1 * cos - x2 * sin).stack(x2 * cos + x1 * sin, dim=-1).reshape(x.shape).cast(dt)


def attention(cfg: DecoderConfig, q: Tensor, cache: Tensor, start, T: int) -> Tensor:
  """softmax(q Kᵀ/√hd + causal mask) V over the S = start + T cached positions, fp32.
  q (H, T, hd), cache (2, Hkv, ctx, hd) -> (T, H·hd)."""
  H, Hkv, hd = cfg.heads, cfg.kv_heads, cfg.hd
  keys, values = cache[0, :, 0:start + T].float().unsqueeze(1), cache[1, :, 0:start + T].float().unsqueeze(1)  # (Hkv, 1, S, hd)
  scores = q.float().reshape(Hkv, H // Hkv, T, hd) @ keys.transpose(-1, -2) / math.sqrt(hd)   # (Hkv, H/Hkv, T, S)
  if T > 1:                       # query t sits at position start + t and sees keys 0..start + t
    future = Tensor.arange(start + T).reshape(1, -1) > (Tensor.arange(T).reshape(-1, 1) + start)
    scores = future.where(-math.inf, scores)
  # the max per row is its own kernel (a reduction broadcast afterwards is always stored first); e is never stored
  e = (scores - scores.max(-1, keepdim=True)).exp()
  # (Σ_t e_t v_t) / Σ_t e_t: the denominator summed in the same loop over t as the numerator (e broadcast over hd)
  a = (e @ values) / e.unsqueeze(-1).expand(*e.shape, hd).sum(-2)                           # (Hkv, H/Hkv, T, hd)
  return a.reshape(H, T, hd).transpose(0, 1).reshape(T, H * hd)


def greedy_token(logits: Tensor, row: int = 256) -> Tensor:
  """argmax over the vocabulary, (1, V) float -> (1, 1) int32: the first index of the largest logit, in two levels:
  the logits (padded with −inf) viewed as (V/row, row), each row reduced by its own threads, then the row results.
  (tinygrad's argmax(-1) leaves 256 threads each walking 501 of LLaMA 3's 128,256 logits.) The index pass takes
  max over i of (N − i) where the logit equals the max (N = padded length): the smallest such i wins, as in argmax."""
  V = logits.shape[-1]
  # padded to a multiple of 16 rows, so that the second level splits evenly over threads too (128,256 -> 512 x 256)
  padded = logits.reshape(V).pad(((0, (-V) % (16 * row)),), value=-math.inf).reshape(-1, row)    # (rows, row)
  n = padded.shape[0] * row
  # .contiguous() makes each level a kernel of its own: left to fuse, the levels become one kernel that few threads walk
  best = padded.max(1).contiguous().max().contiguous()                                            # the largest logit
  countdown = Tensor.arange(n, 0, -1, dtype=dtypes.int32).reshape(-1, row)                         # N − i
  first = (padded == best).where(countdown, 0).max(1).contiguous().max()                          # N − (first index of the max)
  return (n - first).reshape(1, 1).cast(dtypes.int32)


# --- plumbing: the KV caches and the JIT'd step that replays the math above at every position ------------------

class Decoder:
  """KV caches on the device, the RoPE table, and ONE TinyJit'd decode step: the position is a bound Variable, and so
  is the token when it comes from the host (an int), so the kernels captured once replay at every position.
  A subclass supplies forward(tokens, start, T, all_logits) -> logits: tokens a token Tensor or Variable (decode,
  T = 1) or a list of T ids (prefill), start an int or the bound position Variable."""
  def __init__(self, cfg: DecoderConfig, max_context: int, kv_dtype=dtypes.half, freq_factors: np.ndarray | None = None):
    self.cfg, self.max_context = cfg, max_context
    self.caches = [Tensor.zeros(2, cfg.kv_heads, max_context, cfg.hd, dtype=kv_dtype).contiguous().realize() for _ in range(cfg.layers)]
    self.rope = rope_table(cfg, max_context, freq_factors)
    self.pos_var, self.token_var = UOp.variable("pos", 0, max_context - 1), UOp.variable("token", 0, cfg.vocab - 1)
    self.step_jit = TinyJit(self._step)
    self.pos = 0

  def forward(self, tokens, start, T: int, all_logits: bool = False) -> Tensor: raise NotImplementedError

  def _room(self, n: int) -> None:
    if self.pos + n > self.max_context: raise UserError(f"the context of {self.max_context} tokens is full")

  def _step(self, token, pos) -> tuple[Tensor, Tensor]:
    logits = self.forward(token, pos, 1)
    return logits.realize(), greedy_token(logits).realize()

  def step(self, token: int | Tensor) -> tuple[Tensor, Tensor]:
    """One decode step for `token` (an int, or a (1, 1) int32 device Tensor such as the last greedy token) at the next
    position: (logits (1, V), the greedy next token (1, 1))."""
    self._room(1)
    out = self.step_jit(self.token_var.bind(token) if isinstance(token, int) else token, self.pos_var.bind(self.pos))
    self.pos += 1
    return out

  __call__ = step

  def prefill(self, ids: list[int], all_logits: bool = False) -> Tensor:
    """All prompt tokens in one forward pass (matmuls over T rows, causal mask), their K and V into the cache."""
    self._room(len(ids))
    logits = self.forward(ids, self.pos, len(ids), all_logits).realize()
    self.pos += len(ids)
    return logits

  def kernels_per_token(self) -> int:
    """Kernels in the captured step (a CUDA graph counts every kernel inside it)."""
    return jit_kernel_count(self.step_jit)
