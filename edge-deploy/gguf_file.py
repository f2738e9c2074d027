"""edge-deploy: the GGUF container, read with numpy (no llama.cpp, no gguf package), and a numpy reference dequantizer
for the block formats a small quantized LLM uses. gguf_weights.py puts the same bytes on the device; gguf_model.py
runs the model.

A GGUF file (versions 2 and 3; all integers little-endian) is
    magic "GGUF" | version u32 | tensor count u64 | metadata count u64
    metadata: key (string) | value type u32 | value             string = length u64 + UTF-8 bytes
    tensor infos: name | n_dims u32 | ne[0..n_dims) u64 | ggml type u32 | offset u64
    padding to general.alignment (default 32) | tensor data, each tensor at data start + its offset
Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array (item type u32, count u64,
items), 10 u64, 11 i64, 12 f64. ne[0] is the innermost (contiguous) axis, so numpy's shape is ne reversed: a linear
layer's weight with ne = [in, out] is the (out, in) matrix W of y = W x, one row per output.

A row of K values is stored as K / B blocks of B values each (B = 32, or 256 for the "K-quants"):
  F32, F16, BF16  plain values (bf16 = the top 16 bits of an fp32)
  Q8_0  34 B / 32 values: d (f16), q[32] (i8)                                          w = d · q
  Q4_0  18 B / 32 values: d (f16), qs[16] (u8); value j < 16 is qs[j] & 15, value j ≥ 16 is qs[j−16] >> 4
                                                                                       w = d · (nibble − 8)
  Q4_K  144 B / 256 values: d, dmin (f16), scales[12], qs[128]. 8 sub-blocks of 32 values, each with a 6-bit scale
        s_j and a 6-bit min m_j packed in scales[]: for j < 4, s_j = sc[j] & 63, m_j = sc[j+4] & 63; for j ≥ 4,
        s_j = (sc[j+4] & 15) | (sc[j−4] >> 6) << 4, m_j = (sc[j+4] >> 4) | (sc[j] >> 6) << 4. Sub-blocks 2c and
        2c+1 share the 32 bytes qs[32c..32c+32): low nibbles are sub-block 2c, high nibbles 2c+1.
                                                                                       w = d · s_j · q − dmin · m_j
  Q6_K  210 B / 256 values: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (i8), d (f16). 16 sub-blocks of
        16 values, value e has scale scales[e // 16]. In each half n of 128 values, value 32g + l (g < 4, l < 32)
        takes the nibble (g >> 1) of ql[64n + 32(g & 1) + l] and bits 2g..2g+1 of qh[32n + l].
                                                                                       w = d · scale · (q6 − 32)
(bits per weight: Q8_0 8.5, Q6_K 6.56, Q4_K 4.5, Q4_0 4.5). These layouts are ggml-common.h's block_q8_0, block_q4_0,
block_q4_K and block_q6_K, dequantized as ggml-quants.c does; tests/test_edge_gguf.py checks them against the gguf
package's dequantizer.

`split_blocks` turns a tensor's array of block structs into one array per field ("struct of arrays": d, q, ...), the
same bytes regrouped, so that the device can read each field with aligned loads; `dequantize_parts` is the reference.
Any malformed file is one line (common.UserError): not a GGUF, an unsupported version, truncated (a read or a tensor
beyond the end), a misaligned tensor, a block type this reader does not decode (named).
"""
from __future__ import annotations
import math, os, struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import UserError

# ggml type id -> name; (values per block, bytes per block) for the types decoded here
GGML_TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
                   12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
                   20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
                   29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}
BLOCKS = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_K": (256, 144), "Q6_K": (256, 210)}
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                      # GGML_MAX_DIMS

# ---- blocks: array of structs -> struct of arrays (the same bytes), and the reference dequantizer ----

def _f16(field: np.ndarray) -> np.ndarray:
  """(…, 2) bytes -> (…) float16."""
  return np.ascontiguousarray(field).view(np.float16)[..., 0]


def split_blocks(kind: str, raw: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
  """A tensor's bytes as its block fields, rows = every axis but the last: F32/F16/BF16 {"w": (rows, K)};
  Q8_0 {"d": (rows, K/32) f16, "q": (rows, K/32, 32) i8}; Q4_0 {"d", "qs": (rows, K/32, 16) u8};
  Q4_K {"d", "dmin": (rows, K/256) f16, "scales": (rows, K/256, 12) u8, "qs": (rows, K/256, 128) u8};
  Q6_K {"ql": (rows, K/256, 128) u8, "qh": (rows, K/256, 64) u8, "scales": (rows, K/256, 16) i8, "d": (rows, K/256) f16}."""
  rows, K = math.prod(shape[:-1]), shape[-1]
  if kind in ("F32", "F16", "BF16"): return {"w": raw.view({"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[kind]).reshape(rows, K)}
  per_block, block_bytes = BLOCKS[kind]
  b = raw.reshape(rows, K // per_block, block_bytes)
  if kind == "Q8_0": return {"d": _f16(b[..., 0:2]), "q": np.ascontiguousarray(b[..., 2:34]).view(np.int8)}
  if kind == "Q4_0": return {"d": _f16(b[..., 0:2]), "qs": np.ascontiguousarray(b[..., 2:18])}
  if kind == "Q4_K": return {"d": _f16(b[..., 0:2]), "dmin": _f16(b[..., 2:4]), "scales": np.ascontiguousarray(b[..., 4:16]),
                             "qs": np.ascontiguousarray(b[..., 16:144])}
  if kind == "Q6_K": return {"ql": np.ascontiguousarray(b[..., 0:128]), "qh": np.ascontiguousarray(b[..., 128:192]),
                             "scales": np.ascontiguousarray(b[..., 192:208]).view(np.int8), "d": _f16(b[..., 208:210])}
  raise UserError(f"block type {kind} is not decoded here (it does {', '.join(BLOCKS)})")


def q4k_scales_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The 12 packed bytes of each Q4_K block -> 8 six-bit scales and 8 six-bit mins, (…, 8) each."""
  a, b, c = (scales[..., i:i + 4].astype(np.int32) for i in (0, 4, 8))
  sc = np.concatenate([a & 63, (c & 15) | ((a >> 6) << 4)], axis=-1)
  mn = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=-1)
  return sc, mn


def dequantize_parts(kind: str, p: dict[str, np.ndarray]) -> np.ndarray:
  """Block fields (split_blocks) -> float32 (rows, K), the formulas of the module docstring."""
  if kind == "F32" or kind == "F16": return p["w"].astype(np.float32)
  if kind == "BF16": return (p["w"].astype(np.uint32) << 16).view(np.float32)
  rows = p["d"].shape[0]
  d = p["d"].astype(np.float32)[..., None]
  if kind == "Q8_0": return (d * p["q"]).reshape(rows, -1)
  if kind == "Q4_0":
    q = np.concatenate([p["qs"] & 15, p["qs"] >> 4], axis=-1).astype(np.float32) - 8     # (rows, K/32, 32)
    return (d * q).reshape(rows, -1)
  if kind == "Q4_K":
    sc, mn = q4k_scales_mins(p["scales"])                                                # (rows, K/256, 8)
    qs = p["qs"].reshape(*p["qs"].shape[:-1], 4, 32)
    q = np.stack([qs & 15, qs >> 4], axis=-2).reshape(*qs.shape[:-2], 8, 32)            # sub-block 2c, then 2c+1
    w = d[..., None] * sc[..., None] * q - p["dmin"].astype(np.float32)[..., None, None] * mn[..., None]
    return w.astype(np.float32).reshape(rows, -1)
  if kind == "Q6_K":
    ql, qh = p["ql"].astype(np.int32), p["qh"].astype(np.int32)
    out = np.empty((*ql.shape[:-1], 256), dtype=np.float32)
    for n in range(2):                                                                   # the two halves of 128 values
      for g in range(4):
        low = (ql[..., 64 * n + 32 * (g & 1):64 * n + 32 * (g & 1) + 32] >> (4 * (g >> 1))) & 15
        high = (qh[..., 32 * n:32 * n + 32] >> (2 * g)) & 3
        e = 128 * n + 32 * g + np.arange(32)
        out[..., e] = (low | high << 4) - 32
    scale = np.repeat(p["scales"].astype(np.float32), 16, axis=-1)                       # scale of value e: scales[e // 16]
    return (d * scale * out).reshape(rows, -1)
  raise UserError(f"block type {kind} is not decoded here (it does {', '.join(BLOCKS)})")


# --- plumbing: the container, every read checked against the end of the file -----------------

# scalar value types: (struct format, bytes)
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4), 6: ("<f", 4), 7: ("<?", 1),
            10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
  name: str
  shape: tuple[int, ...]          # numpy order: ne reversed, the contiguous axis last
  type_id: int
  offset: int                     # absolute byte offset in the file
  nbytes: int | None              # None: a block type not decoded here (refused when the tensor is used)

  @property
  def type_name(self) -> str: return GGML_TYPE_NAMES.get(self.type_id, f"type {self.type_id}")


class GGUFFile:
  """A GGUF file's metadata and tensor table, its bytes mapped copy-on-write (np.memmap mode "c": nothing is read until
  used, and nothing is ever written back). Copy-on-write rather than read-only because tinygrad's CUDA copy-in takes
  the host buffer through ctypes.from_buffer, which refuses read-only memory: F32, F16 and BF16 matrices, whose bytes
  go to the device without a copy on the host, cannot load on CUDA from a read-only mapping."""
  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    try: size = self.path.stat().st_size
    except OSError as e: raise UserError(f"{self.path}: cannot be read ({e.strerror})")
    if size < 4: raise UserError(f"{self.path} is not a GGUF file ({size} bytes)")
    try: self.data = np.memmap(self.path, dtype=np.uint8, mode="c")
    except (OSError, ValueError) as e: raise UserError(f"{self.path}: cannot be mapped ({e})")
    self.pos = 0
    if bytes(self.data[:4]) != b"GGUF": raise UserError(f"{self.path} is not a GGUF file (it starts with {bytes(self.data[:4])!r}, not b'GGUF')")
    self.pos = 4
    self.version = self._scalar(4)
    if self.version not in SUPPORTED_VERSIONS:
      hint = " (a big-endian file?)" if self.version >= 1 << 16 else ""
      raise UserError(f"{self.path}: GGUF version {self.version} is not supported (versions 2 and 3 are){hint}")
    n_tensors, n_kv = self._scalar(10), self._scalar(10)
    self.metadata: dict = {}
    for _ in range(n_kv):
      key = self._string()
      self.metadata[key] = self._value(self._scalar(4), key)
    infos = [self._tensor_info() for _ in range(n_tensors)]
    self.alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(self.alignment, int) or self.alignment <= 0 or self.alignment & (self.alignment - 1):
      raise UserError(f"{self.path}: general.alignment = {self.alignment!r} is not a power of two")
    self.data_offset = -(-self.pos // self.alignment) * self.alignment
    self.tensors: dict[str, TensorInfo] = {}
    for name, shape, type_id, offset in infos:
      if offset % self.alignment: raise UserError(f"{self.path}: tensor {name} starts at offset {offset}, not a multiple of {self.alignment}")
      self.tensors[name] = info = TensorInfo(name, shape, type_id, self.data_offset + offset, tensor_nbytes(name, shape, type_id))
      if info.nbytes is not None and info.offset + info.nbytes > size:
        raise UserError(f"{self.path} is truncated: tensor {name} ends at byte {info.offset + info.nbytes:,}, the file has {size:,}")

  # ---- reading the header: every read is checked against the end of the file ----

  def _take(self, n: int) -> np.ndarray:
    if n < 0 or self.pos + n > len(self.data):
      raise UserError(f"{self.path} is truncated: reading {n:,} bytes at offset {self.pos:,} runs past its end ({len(self.data):,} bytes)")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def _scalar(self, vtype: int):
    fmt, n = _SCALARS[vtype]
    return struct.unpack(fmt, self._take(n).tobytes())[0]

  def _string(self) -> str:
    return self._take(self._scalar(10)).tobytes().decode("utf-8", errors="surrogateescape")

  def _value(self, vtype: int, key: str):
    if vtype in _SCALARS: return self._scalar(vtype)
    if vtype == STRING: return self._string()
    if vtype != ARRAY: raise UserError(f"{self.path}: metadata {key!r} has value type {vtype}, which GGUF does not define")
    item, count = self._scalar(4), self._scalar(10)
    if item in _NUMPY:                          # numbers: one read for the whole array
      return np.frombuffer(self._take(count * _SCALARS[item][1]).tobytes(), dtype=_NUMPY[item]).tolist()
    if count * 8 > len(self.data) - self.pos:   # every string or array item takes at least its 8-byte length
      raise UserError(f"{self.path} is truncated: metadata {key!r} claims {count:,} items, more than the file holds")
    return [self._value(item, key) for _ in range(count)]

  def _tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
    name, n_dims = self._string(), self._scalar(4)
    if not 1 <= n_dims <= MAX_DIMS: raise UserError(f"{self.path}: tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} are allowed)")
    ne = [self._scalar(10) for _ in range(n_dims)]
    return name, tuple(reversed(ne)), self._scalar(4), self._scalar(10)

  # ---- tensors ----

  def info(self, name: str) -> TensorInfo:
    if name not in self.tensors: raise UserError(f"{self.path}: tensor {name} is missing")
    return self.tensors[name]

  def raw(self, name: str) -> np.ndarray:
    """The tensor's bytes (a view of the mapping; writes to it stay in this process)."""
    info = self.info(name)
    check_supported(info, self.path)
    return self.data[info.offset:info.offset + info.nbytes]

  def parts(self, name: str) -> dict[str, np.ndarray]:
    info = self.info(name)
    return split_blocks(info.type_name, self.raw(name), info.shape)

  def dequantize(self, name: str) -> np.ndarray:
    """The tensor as float32 in its numpy shape, by the reference dequantizer."""
    info = self.info(name)
    return np.asarray(dequantize_parts(info.type_name, self.parts(name))).reshape(info.shape)    # an array, not a memmap

  def rows(self, name: str, ids: list[int]) -> np.ndarray:
    """Rows `ids` of a matrix as float32 (len(ids), K), dequantized from those rows' bytes alone (the prompt's embeddings)."""
    info = self.info(name)
    raw = self.raw(name).reshape(info.shape[0], -1)[np.asarray(ids, dtype=np.int64)]
    return dequantize_parts(info.type_name, split_blocks(info.type_name, raw.reshape(-1), (len(ids), info.shape[-1])))

  def vector(self, name: str, length: int) -> np.ndarray:
    """A 1-D tensor (a norm weight, a bias) of `length` values as float32; another size is one line."""
    shape = self.info(name).shape
    if math.prod(shape) != length: raise UserError(f"{self.path}: tensor {name} has shape {shape}, expected ({length},)")
    return self.dequantize(name).reshape(length)


def tensor_nbytes(name: str, shape: tuple[int, ...], type_id: int) -> int | None:
  """Bytes of a tensor of a type decoded here (None for other types: refused when the tensor is used)."""
  kind = GGML_TYPE_NAMES.get(type_id)
  if kind not in BLOCKS: return None
  per_block, block_bytes = BLOCKS[kind]
  if shape[-1] % per_block: raise UserError(f"tensor {name}: a row of {shape[-1]} values is not a whole number of {kind} blocks of {per_block}")
  return math.prod(shape) // per_block * block_bytes


def check_supported(info: TensorInfo, path) -> None:
  if info.type_name not in BLOCKS:
    raise UserError(f"{path}: tensor {info.name} is {info.type_name}, a block type this reader does not decode (it does {', '.join(BLOCKS)})")
