"""edge-deploy: GGUF weights on the device, still quantized, dequantized by tensor ops inside the matvec.

A decode step at batch 1 reads every weight once (y = W x, one matrix-vector product per matrix), so its speed is
the bytes it reads: a 4.5-bit Q4_K matrix reads 3.6x fewer bytes than fp16. That holds only if no fp16/fp32 copy of W
is ever written. Here each weight keeps its GGML block fields (gguf_file.split_blocks: the file's bytes regrouped
into one array per field, d, q, qs, ...) as device tensors, and `dequantize()` is a lazy tensor expression:
    Q8_0   W[r, 32b + j]  = d[r, b] · q[r, b, j]
    Q4_0   W[r, 32b + 16h + j] = d[r, b] · (((qs[r, b, j] >> 4h) & 15) − 8)            h ∈ {0, 1}
    Q4_K   W[r, 256s + 64c + 32h + l] = d · sc[2c+h] · ((qs[32c + l] >> 4h) & 15) − dmin · mn[2c+h]
    Q6_K   W[r, 256s + 128n + 32g + l] = d · scales[8n + 2g + l // 16] · (q6 − 32),
           q6 = ((ql[64n + 32(g & 1) + l] >> 4(g >> 1)) & 15) | ((qh[32n + l] >> 2g) & 3) << 4
(shapes in gguf_file.py's docstring). The nibble and bit selections are broadcasts of a shift over a new axis of size
2 or 4 (`qs.unsqueeze(-2) >> [0, 4]`), views rather than copies, so `linear(x, w) = x @ dequantize(w)ᵀ` is ONE kernel
whose loop loads the packed bytes, unpacks them in registers and accumulates in fp32; tinygrad's estimate of the
bytes it moves is W's packed bytes plus x and y (tests/test_edge_gguf.py checks both, for every type).

What makes that kernel fast on a GPU, where decode should run at the memory bandwidth:
  - wide loads. tinygrad merges neighbouring loads into one vector load only for 32-bit and fp16 elements, so a field
    of byte codes (q, qs, ql, qh) is kept as uint32 words, the same bytes (little-endian: byte j of a word is bits
    8j..8j+7), and the dequantize shifts the bytes out of the words: 4 words are one 16-byte load;
  - a thread layout: the backend's matvec fix (backend/patches/matvec.py, packed_matvec_opts) gives such a kernel 32
    threads per row, each loading 16 bytes of codes per step (32 four-bit values), where tinygrad's own heuristic
    gives 16 threads of scalar byte loads, or one thread per row for a K-quant (a row of 2048 is only 8 blocks).
    llm.py --gguf turns the fix on (MATVEC_FIX=1 unless set; MATVEC_FIX=0 leaves it off);
  - no int -> float conversion per weight (a slow GPU instruction): code_minus below builds the float from bits.

Memory layout per type (rows R, row length K):
  F32/F16 w (R, K) as stored; BF16 w (R, K) uint16, widened by a shift into fp32's top half
  Q8_0  d (R, K/32) fp16, q (R, K/32, 8) uint32 (32 int8)                                  8.5 bits per weight
  Q4_0  d (R, K/32) fp16, qs (R, K/32, 4) uint32 (16 bytes)                                 4.5
  Q4_K  d, dmin (R, K/256) fp16, scales (R, K/256, 12) uint8, qs (R, K/256, 32) uint32       4.5
  Q6_K  ql (R, K/256, 32) uint32, qh (R, K/256, 16) uint32, scales (R, K/256, 16) int8, d (R, K/256) fp16   6.5625
The 6-bit Q4_K scales stay packed: they are unpacked in the kernel too (a few integer ops per value).
`stack_rows` stacks the matrices that read the same input (q|k|v, gate|up: gguf_model.load_weights), so one matvec
computes them.
"""
from __future__ import annotations
import math
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, dtypes

import gguf_file as gf


@dataclass
class GGMLWeight:
  """A (rows, cols) weight in its GGML block format, one device tensor per block field, every field with rows first."""
  kind: str                       # "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"
  shape: tuple[int, int]
  parts: dict[str, Tensor]

  def dequantize(self) -> Tensor:
    """W as float32 (rows', cols), lazily: used in a matmul, tinygrad fuses it into that kernel."""
    return DEQUANTIZE[self.kind](self.parts).reshape(-1, self.shape[1])

  def nbytes(self) -> int: return sum(t.nbytes() for t in self.parts.values())

  def row_nbytes(self) -> int: return self.nbytes() // self.shape[0]

  def rows(self, index) -> GGMLWeight:
    """Some rows, still packed: index a slice (one row at a bound Variable: the decoded token's embedding, a view, so only
    that row is read; the prompt's rows come from the file, GGUFFile.rows)."""
    parts = {k: v[index] for k, v in self.parts.items()}
    return GGMLWeight(self.kind, (next(iter(parts.values())).shape[0], self.shape[1]), parts)


def stack_rows(ws: list[GGMLWeight]) -> GGMLWeight:
  """[W₁; W₂; ...]: the rows of weights of one block type stacked, still packed, so that ONE matvec computes every
  projection that reads the same input (q|k|v, gate|up): fewer kernels, and more rows for the GPU to spread."""
  kind, K = ws[0].kind, ws[0].shape[1]
  if any(w.kind != kind or w.shape[1] != K for w in ws): raise ValueError("stack_rows: the weights differ in block type or row length")
  return GGMLWeight(kind, (sum(w.shape[0] for w in ws), K), {k: Tensor.cat(*[w.parts[k] for w in ws]).realize() for k in ws[0].parts})


def linear(x: Tensor, w: GGMLWeight, bias: Tensor | None = None) -> Tensor:
  """y = x Wᵀ (+ b), x (T, K) float32 -> (T, rows) float32; W is dequantized inside the matmul's kernel."""
  y = x @ w.dequantize().T
  return y if bias is None else y + bias


def _shifts(step: int, shape: tuple[int, ...]) -> Tensor:
  """Shift amounts 0, step, 2·step, ... laid out in `shape` (ones elsewhere) for a broadcast. An arange, not a buffer:
  it becomes index arithmetic inside the kernel."""
  return (Tensor.arange(math.prod(shape), dtype=dtypes.uint32) * step).reshape(shape)


def code_minus(code: Tensor, offset: int) -> Tensor:
  """code − offset as float32, for an unsigned integer code < 2²³, without an int -> float conversion (a slow
  instruction on a GPU: a quarter of the fp32 rate or less, and a decode step would need one per weight): the code
  OR-ed into the mantissa of 2²³ is the float 2²³ + code, exactly, and one subtraction leaves code − offset."""
  return (code | 0x4B000000).bitcast(dtypes.float32) - float(2 ** 23 + offset)


def _q8_0(p: dict) -> Tensor:
  # byte j of word i is q[4i + j]; flipping its top bit turns the int8 q into the code q + 128
  q = code_minus(((p["q"].unsqueeze(-1) >> _shifts(8, (1, 1, 1, 4))) & 255) ^ 128, 128)      # (R, K/32, 8, 4)
  return q.flatten(-2) * p["d"].float().unsqueeze(-1)                                        # (R, K/32, 32)


def _q4_0(p: dict) -> Tensor:
  # value 16h + 4i + j of a block: nibble h of byte j of word i
  nibbles = (p["qs"].reshape(*p["qs"].shape[:-1], 1, 4, 1) >> (_shifts(4, (1, 1, 2, 1, 1)) + _shifts(8, (1, 1, 1, 1, 4)))) & 15
  return code_minus(nibbles, 8).flatten(-3) * p["d"].float().unsqueeze(-1)                   # (R, K/32, 32)


def q4k_scales_mins(scales: Tensor) -> tuple[Tensor, Tensor]:
  """(…, 12) packed bytes -> (…, 8) six-bit scales and mins (gguf_file.q4k_scales_mins, as tensor ops)."""
  a, b, c = scales[..., 0:4], scales[..., 4:8], scales[..., 8:12]
  sc = (a & 63).cat((c & 15) | ((a >> 6) << 4), dim=-1)
  mn = (b & 63).cat((c >> 4) | ((b >> 6) << 4), dim=-1)
  return sc, mn


def _q4_k(p: dict) -> Tensor:
  # value 64c + 32h + 4i + j of a block: nibble h of byte j of word 8c + i
  R, S = p["d"].shape
  sc, mn = (t.float().reshape(R, S, 4, 2, 1, 1) for t in q4k_scales_mins(p["scales"]))     # sub-block 2c + h
  q = (p["qs"].reshape(R, S, 4, 1, 8, 1) >> (_shifts(4, (1, 1, 1, 2, 1, 1)) + _shifts(8, (1, 1, 1, 1, 1, 4)))) & 15
  d, dmin = (t.float().reshape(R, S, 1, 1, 1, 1) for t in (p["d"], p["dmin"]))
  return d * sc * code_minus(q, 0) - dmin * mn                                               # (R, S, 4, 2, 8, 4)


def _q6_k(p: dict) -> Tensor:
  # value 128n + 64a + 32b + 16s + 4i + j of a block (g = 2a + b, l = 16s + 4i + j) on axes (R, S, n, a, b, s, i, j):
  # nibble a of ql[64n + 32b + l] (word 16n + 8b + 4s + i), bits 2g, 2g+1 of qh[32n + l] (word 8n + 4s + i); byte j
  R, S = p["d"].shape
  ql = p["ql"].reshape(R, S, 2, 1, 2, 2, 4, 1) >> (_shifts(4, (1, 1, 1, 2, 1, 1, 1, 1)) + _shifts(8, (1, 1, 1, 1, 1, 1, 1, 4)))
  qh = p["qh"].reshape(R, S, 2, 1, 1, 2, 4, 1) >> (_shifts(2, (1, 1, 1, 2, 2, 1, 1, 1)) + _shifts(8, (1, 1, 1, 1, 1, 1, 1, 4)))
  q6 = (ql & 15) | ((qh & 3) << 4)
  scale = p["scales"].float().reshape(R, S, 2, 2, 2, 2, 1, 1)                               # scales[8n + 4a + 2b + s]
  return p["d"].float().reshape(R, S, 1, 1, 1, 1, 1, 1) * scale * code_minus(q6, 32)


def _bf16(p: dict) -> Tensor: return (p["w"].cast(dtypes.uint32) << 16).bitcast(dtypes.float32)


# the fields of packed codes, kept on the device as uint32 words (4 bytes each, little-endian: byte j = bits 8j..8j+7)
WORD_FIELDS = {"Q8_0": ("q",), "Q4_0": ("qs",), "Q4_K": ("qs",), "Q6_K": ("ql", "qh")}
DEQUANTIZE = {"F32": lambda p: p["w"].float(), "F16": lambda p: p["w"].float(), "BF16": _bf16,
              "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_K": _q4_k, "Q6_K": _q6_k}


# --- plumbing: from the file to the device ---------------------------------------------------------

def load_weight(f: gf.GGUFFile, name: str) -> GGMLWeight:
  """A matrix from the file onto the default device, in its block format (the bytes the file holds)."""
  info = f.info(name)
  if len(info.shape) != 2: raise gf.UserError(f"{f.path}: tensor {name} has shape {info.shape}, expected a matrix")
  return weight_from_parts(info.type_name, info.shape, f.parts(name))


def weight_from_parts(kind: str, shape: tuple[int, int], parts: dict[str, np.ndarray]) -> GGMLWeight:
  """gguf_file.split_blocks' fields on the device; the packed code bytes viewed as little-endian uint32 words (the same
  bytes), so that the matvec loads them 16 bytes at a time."""
  words = {k: np.ascontiguousarray(v).view(np.uint32) if k in WORD_FIELDS.get(kind, ()) else np.ascontiguousarray(v) for k, v in parts.items()}
  return GGMLWeight(kind, shape, {k: Tensor(v).realize() for k, v in words.items()})


def load_vector(f: gf.GGUFFile, name: str, length: int) -> Tensor:
  """A norm weight or bias (small): dequantized once, float32 on the device."""
  return Tensor(f.vector(name, length)).realize()
