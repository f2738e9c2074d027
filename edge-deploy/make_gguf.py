#!/usr/bin/env python3
"""edge-deploy: write a GGUF file of a real model's shape with random weights, so that `llm.py --gguf` can be
measured on a GPU without downloading a model. Decode speed depends on the bytes a step reads and their layout, not
on what the weights know: the file has the tensor names, shapes, block types and metadata llama.cpp writes for that
model, and random numbers inside. The text it generates is noise; the bytes and shapes are real.

What it writes (--shape: any llm.py preset, or dim,layers,heads,kv_heads,hidden,vocab; --arch llama, qwen2, qwen3):
    token_embd.weight (vocab, d)  blk.N.attn_{q,k,v,output}.weight  blk.N.ffn_{gate,up,down}.weight
    blk.N.attn_norm / ffn_norm.weight (d,)  output_norm.weight (d,)  [output.weight when untied]
    Qwen2: blk.N.attn_{q,k,v}.bias;  Qwen3: blk.N.attn_{q,k}_norm.weight (head_dim,)
Names and shapes come from gguf_model.tensor_shapes: exactly what the model reads. Block types follow llama.cpp's
`llama-quantize` for the file type (llama_tensor_get_type); norms and biases are F32, as everywhere:
    F16, Q8_0, Q6_K   every matrix in that type
    Q4_0  matrices Q4_0; the output head (the token table when tied) Q6_K
    Q4_K  as Q4_K_M: matrices Q4_K; attn_v and ffn_down Q6_K in layers i < n/8, i >= 7n/8 and (i − n/8) % 3 == 2
          (LLaMA 3.2 1B: 0, 1, 4, 7, 10, 13, 14, 15); the output head (or the tied table) Q6_K
A row that is not a whole number of blocks (the `tiny` shape's 64 values for a 256-value K-quant) falls back to Q8_0
(llama.cpp takes Q8_0 for Q6_K, Q5_0 for Q4_K: not decoded here).

The values: w ~ N(0, 0.02²), stored as F16 or quantized as ggml's reference quantizer does, bit for bit: Q8_0
d = max|w| / 127, q = round(w / d); Q4_0 d = m / −8 (m the largest-magnitude w), q = min(15, trunc(w / d + 8.5)).
Q4_K and Q6_K blocks are random bytes (every code and 6-bit scale is valid) with fp16 d (and Q4_K's dmin) sized so
the dequantized weights have about the same spread. Norm gains are 1 + N(0, 0.02²): the logits stay finite.
The tokenizer is byte-level BPE with the shape's vocabulary size: GPT-2's 256 byte tokens, synthetic merges over the
space (Ġ) and the letters ("Ġ e", ..., "t h", ..., then "Ġt h", ...: each joins an earlier token and a letter) and
256 special tokens at the end (LLaMA-3's <|begin_of_text|> = 128000, <|end_of_text|>, <|start_header_id|>,
<|eot_id|>, ...; Qwen's <|endoftext|>, <|im_start|>, <|im_end|>; padded with <|reserved_special_token_k|>).

The container is GGUF v3 as gguf_file.py reads it: header, metadata, tensor infos, padding to 32 bytes, each tensor
at an aligned offset. Tensors are made in chunks of 4M values and streamed to a temporary file, renamed at the end.
Measured on the 2-core dev VM for llama3.2-1b: Q4_K 0.803 GB in 2.3 s, Q6_K 1.02 GB in 2.7 s, Q4_0 0.77 GB in 18 s,
Q8_0 1.32 GB in 27 s, F16 2.48 GB in 22 s (the quantizers and the normal draws are the time).

Run it
  python3 edge-deploy/make_gguf.py out/llama1b-q4k.gguf --shape llama3.2-1b --type Q4_K    # --shape qwen3-0.6b: arch qwen3
  NV=1 python3 edge-deploy/llm.py --gguf out/llama1b-q4k.gguf --prompt Hi --max-tokens 64 --json out/gguf.json
"""
from __future__ import annotations
import dataclasses, itertools, math, shutil, struct, sys, time
from pathlib import Path

import common                     # first: it settles DEV before tinygrad is imported (by llm)
import numpy as np
from common import UserError
from llm import LLAMA_CONFIGS, LlamaConfig, parse_llama_config
import gguf_file as gf
from gguf_model import ROPE_PAIRS, tensor_shapes
from gguf_tokenizer import BYTE_TO_CHAR

FILE_TYPES = {"F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K": 15, "Q6_K": 18}    # general.file_type (Q4_K: LLAMA_FTYPE_MOSTLY_Q4_K_M)
TYPE_IDS = {name: i for i, name in gf.GGML_TYPE_NAMES.items()}
CONTEXT = {"llama": 131072, "qwen2": 32768, "qwen3": 40960}               # what LLaMA 3.2, Qwen2.5 and Qwen3 files say
STD, ALIGNMENT = 0.02, 32


# ---- which block type each tensor gets: llama.cpp's llama_tensor_get_type for these file types ----

def more_bits(i: int, n: int) -> bool: return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(file_type: str, name: str, shape: tuple[int, ...], layers: int, tied: bool) -> str:
  if len(shape) == 1: return "F32"
  role, layer = name.split(".")[-2], int(name.split(".")[1]) if name.startswith("blk.") else -1
  kind = file_type                                      # the output head, or the token table when it is the head too
  if file_type in ("Q4_0", "Q4_K", "Q6_K") and (role == "output" or (role == "token_embd" and tied)): kind = "Q6_K"
  elif file_type == "Q4_K" and role in ("attn_v", "ffn_down") and more_bits(layer, layers): kind = "Q6_K"
  return next(k for k in (kind, "Q8_0", "F16") if shape[-1] % gf.BLOCKS[k][0] == 0)


# ---- the blocks: (rows, K) values -> (rows, bytes per row) uint8 ----------------------------------

def np_roundf(x: np.ndarray) -> np.ndarray:
  """C's roundf (halves away from zero), computed as ggml-quants.c's numpy twin does, for bit-equal codes."""
  a = np.abs(x)
  return np.sign(x) * (np.floor(a) + np.floor(2 * (a - np.floor(a))))


def quantize_q8_0(w: np.ndarray) -> np.ndarray:
  """Q8_0 per block of 32: d = max|w| / 127, q = round(w / d) in [−127, 127]; bytes d (f16) | q[32] (i8)."""
  b = w.reshape(-1, 32).astype(np.float32)
  d = np.abs(b).max(-1, keepdims=True) / np.float32(127)
  q = np_roundf(b * np.divide(1, d, out=np.zeros_like(d), where=d != 0)).astype(np.int8)
  return np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], -1).reshape(w.shape[0], -1)


def quantize_q4_0(w: np.ndarray) -> np.ndarray:
  """Q4_0 per block of 32: d = m / −8 with m the largest-magnitude value, q = min(15, trunc(w / d + 8.5)), so m -> 0;
  bytes d (f16) | qs[16], qs[j] = q[j] | q[j + 16] << 4."""
  b = w.reshape(-1, 32).astype(np.float32)
  d = np.take_along_axis(b, np.abs(b).argmax(-1)[:, None], -1) / np.float32(-8)
  q = np.minimum(np.trunc(b * np.divide(1, d, out=np.zeros_like(d), where=d != 0) + np.float32(8.5)), 15).astype(np.uint8)
  return np.concatenate([d.astype(np.float16).view(np.uint8), q[:, :16] | q[:, 16:] << 4], -1).reshape(w.shape[0], -1)


def random_kquant(kind: str, rows: int, K: int, rng: np.random.Generator, std: float = STD) -> np.ndarray:
  """Random Q4_K or Q6_K blocks whose dequantized values have a spread of about `std`: every code and 6-bit scale is
  valid, and d (Q4_K: d and dmin = 7.5 d) is an fp16 sized for it. Over uniform codes, scales and mins, Q4_K's
  std(d·s·q − dmin·m) ≈ 270 d and Q6_K's std(d·scale·(q6 − 32)) ≈ 1420 d."""
  per, nbytes = gf.BLOCKS[kind]
  blocks = rng.integers(0, 256, size=(rows * K // per, nbytes), dtype=np.uint8)
  d = rng.uniform(0.5, 1.5, size=len(blocks)) * std / (270 if kind == "Q4_K" else 1420)
  def f16(v: np.ndarray) -> np.ndarray: return v.astype(np.float16).view(np.uint8).reshape(-1, 2)
  if kind == "Q4_K": blocks[:, 0:2], blocks[:, 2:4] = f16(d), f16(7.5 * d * rng.uniform(0.8, 1.2, size=len(d)))
  else: blocks[:, 208:210] = f16(d)
  return blocks.reshape(rows, -1)


def tensor_rows(kind: str, name: str, rows: int, K: int, rng: np.random.Generator) -> np.ndarray:
  """`rows` rows of a tensor in block type `kind`, as the bytes the file stores."""
  if kind in ("Q4_K", "Q6_K"): return random_kquant(kind, rows, K, rng)
  w = rng.standard_normal((rows, K), dtype=np.float32) * np.float32(STD)
  if kind == "F32": return (w + np.float32(0 if name.endswith(".bias") else 1)).view(np.uint8)    # norm gains about 1
  if kind == "F16": return w.astype(np.float16).view(np.uint8)
  return quantize_q8_0(w) if kind == "Q8_0" else quantize_q4_0(w)


# ---- the tokenizer: a byte-level BPE vocabulary of the model's size --------------------------------

SPECIALS = {"llama": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                      "<|python_tag|>"],
            "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]}
CHAT_TEMPLATES = {
  "llama": "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
           "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
  "qwen": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"}


def merge_pairs():
  """Merges over the space (Ġ) and the letters: every pair of them, then every such pair and a letter, and so on."""
  alphabet = level = [BYTE_TO_CHAR[b] for b in b" etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ"]
  while True:
    yield from ((left, c) for left in level for c in alphabet)
    level = [left + c for left in level for c in alphabet]


def tokenizer_metadata(arch: str, vocab: int) -> dict:
  family = "llama" if arch == "llama" else "qwen"
  named = SPECIALS[family]
  specials = named + [f"<|reserved_special_token_{k}|>" for k in range(max(0, (256 if vocab >= 4096 else 0) - len(named)))]
  merges = [f"{a} {b}" for a, b in itertools.islice(merge_pairs(), vocab - 256 - len(specials))]
  tokens = [BYTE_TO_CHAR[b] for b in range(256)] + [m.replace(" ", "") for m in merges] + specials
  first = 256 + len(merges)
  bos, eos = (first, first + named.index("<|end_of_text|>")) if family == "llama" else (first, first + named.index("<|im_end|>"))
  return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe" if family == "llama" else "qwen2",
          "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": np.array([1] * first + [3] * len(specials)),
          "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": bos, "tokenizer.ggml.eos_token_id": eos,
          "tokenizer.ggml.add_bos_token": family == "llama", "tokenizer.chat_template": CHAT_TEMPLATES[family]}


# ---- the model: its config, metadata and tensor table ----------------------------------------------

def gguf_config(shape: LlamaConfig, arch: str, vocab: int) -> LlamaConfig:
  return dataclasses.replace(shape, vocab=vocab, head_dim=shape.hd, qk_norm=arch == "qwen3", qkv_bias=arch == "qwen2", rope_pairs=ROPE_PAIRS[arch],
                             arch=arch, context=CONTEXT[arch])


def model_metadata(cfg: LlamaConfig, file_type: str, name: str) -> dict:
  a = cfg.arch
  return {"general.architecture": a, "general.type": "model", "general.name": name, "general.file_type": FILE_TYPES[file_type],
          "general.quantization_version": 2, "general.alignment": ALIGNMENT, f"{a}.vocab_size": cfg.vocab,
          f"{a}.context_length": cfg.context, f"{a}.embedding_length": cfg.dim, f"{a}.block_count": cfg.layers,
          f"{a}.feed_forward_length": cfg.hidden, f"{a}.attention.head_count": cfg.heads, f"{a}.attention.head_count_kv": cfg.kv_heads,
          f"{a}.attention.key_length": cfg.hd, f"{a}.attention.value_length": cfg.hd, f"{a}.rope.dimension_count": cfg.hd,
          f"{a}.rope.freq_base": float(cfg.rope_theta), f"{a}.attention.layer_norm_rms_epsilon": float(cfg.norm_eps)}


def tensor_table(cfg: LlamaConfig, file_type: str) -> list[tuple[str, tuple[int, ...], str, int]]:
  """(name, numpy shape, block type, offset from the data start) of every tensor, each at an aligned offset."""
  table, offset = [], 0
  for name, shape in tensor_shapes(cfg).values():
    table.append((name, shape, kind := tensor_type(file_type, name, shape, cfg.layers, cfg.tied), offset))
    offset += -(-gf.tensor_nbytes(name, shape, TYPE_IDS[kind]) // ALIGNMENT) * ALIGNMENT
  return table


# --- plumbing: the GGUF v3 container, streaming the tensors, CLI, main ----------------------------------

def size_text(n: int) -> str:
  """Bytes in the unit that fits: 2.475 GB, 803.4 MB, 12.3 kB, 416 B."""
  for unit, scale, digits in (("GB", 1e9, 3), ("MB", 1e6, 1), ("kB", 1e3, 1)):
    if n >= scale: return f"{n / scale:.{digits}f} {unit}"
  return f"{n} B"


def _string(s: str) -> bytes: return struct.pack("<Q", len(b := s.encode("utf-8"))) + b


def _value(v) -> tuple[int, bytes]:
  """A metadata value -> (GGUF value type, bytes): bool 7, int u32 4, float f32 6, string 8; arrays (9) of i32 (a numpy
  array) or of strings (a list)."""
  if isinstance(v, np.ndarray): return 9, struct.pack("<IQ", 5, len(v)) + v.astype("<i4").tobytes()
  if isinstance(v, bool): return 7, struct.pack("<?", v)
  if isinstance(v, int): return 4, struct.pack("<I", v)
  if isinstance(v, float): return 6, struct.pack("<f", v)
  if isinstance(v, str): return 8, _string(v)
  return 9, struct.pack("<IQ", 8, len(v)) + b"".join(_string(s) for s in v)      # a list of strings


def header(meta: dict, table: list) -> bytes:
  """magic | version 3 | tensor count | KV count | KVs | tensor infos (name, n_dims, ne reversed, type, offset) | padding."""
  out = [b"GGUF", struct.pack("<IQQ", 3, len(table), len(meta))]
  for key, v in meta.items():
    vtype, payload = _value(v)
    out += [_string(key), struct.pack("<I", vtype), payload]
  for name, shape, kind, offset in table:
    out += [_string(name), struct.pack(f"<I{len(shape)}QIQ", len(shape), *reversed(shape), TYPE_IDS[kind], offset)]
  return (raw := b"".join(out)) + bytes(-len(raw) % ALIGNMENT)


def write_gguf(path, shape: LlamaConfig, file_type: str, arch: str, vocab: int, seed: int = 0, name: str = "random", log=print) -> dict:
  """Write the file; -> {"bytes", "seconds", "types": {block type: tensor count}}."""
  from common.files import atomic_path
  cfg, rng, t0 = gguf_config(shape, arch, vocab), np.random.default_rng(seed), time.perf_counter()
  table = tensor_table(cfg, file_type)
  head = header(model_metadata(cfg, file_type, name) | tokenizer_metadata(arch, vocab), table)
  total = len(head) + table[-1][3] + gf.tensor_nbytes(*table[-1][:2], TYPE_IDS[table[-1][2]])
  free = shutil.disk_usage(Path(path).resolve().parent).free
  if free < total: raise UserError(f"{path}: the file needs {total / 1e9:.2f} GB, the disk has {free / 1e9:.2f} GB free")
  groups = itertools.groupby(table, key=lambda t: ".".join(t[0].split(".")[:2]) if t[0].startswith("blk.") else t[0])
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(head)
    for group, tensors in groups:
      t1, nbytes, kinds = time.perf_counter(), 0, []
      for tname, tshape, kind, offset in tensors:
        K, rows, step = tshape[-1], math.prod(tshape[:-1]), max(1, (1 << 22) // tshape[-1])     # chunks of about 4M values
        for r in range(0, rows, step): f.write(tensor_rows(kind, tname, min(step, rows - r), K, rng))
        f.write(bytes(-f.tell() % ALIGNMENT))
        nbytes, kinds = nbytes + gf.tensor_nbytes(tname, tshape, TYPE_IDS[kind]), kinds + [kind]
      log(f"  {group:<20} {', '.join(f'{k} x{kinds.count(k)}' for k in dict.fromkeys(kinds)):<24} {size_text(nbytes):>10} "
          f"{time.perf_counter() - t1:6.2f} s", flush=True)
  types = {k: sum(t[2] == k for t in table) for k in dict.fromkeys(t[2] for t in table)}
  return {"bytes": Path(path).stat().st_size, "seconds": time.perf_counter() - t0, "types": types}


def main() -> int:
  from common.cli import ArgumentParser, check_writable, first_paragraph, int_range, seed_int
  p = ArgumentParser(description=first_paragraph(__doc__))
  p.add_argument("out", metavar="OUT.gguf", help="the file to write")
  p.add_argument("--shape", type=parse_llama_config, default="llama3.2-1b", metavar="NAME|SIZES",
                 help=f"a preset ({', '.join(LLAMA_CONFIGS)}) or dim,layers,heads,kv_heads,hidden,vocab")
  p.add_argument("--type", choices=list(FILE_TYPES), default="Q4_K", help="file type (Q4_K: llama.cpp's Q4_K_M mix)")
  p.add_argument("--arch", choices=list(CONTEXT), default=None, help="architecture (default: qwen3 for a shape with q/k norms, else llama)")
  p.add_argument("--vocab-tokens", type=int_range(1, 1 << 22), default=None, help="vocabulary size (default: the shape's)")
  p.add_argument("--seed", type=seed_int, default=0, help="random seed of the weights")
  args = p.parse_args()
  shape = args.shape
  arch = args.arch or ("qwen3" if shape.qk_norm else "llama")
  least = 256 + len(SPECIALS["llama" if arch == "llama" else "qwen"]) + 32
  vocab = args.vocab_tokens or max(shape.vocab, least)
  if vocab < least: p.error(f"--vocab-tokens {vocab}: the byte tokens, the special tokens and a few merges need at least {least}")
  check_writable(args.out, "OUT.gguf")
  if vocab != shape.vocab and args.vocab_tokens is None: print(f"note: the vocabulary grows from {shape.vocab} to {vocab} tokens", file=sys.stderr)
  print(f"writing {args.out}: {arch}, dim {shape.dim}, {shape.layers} layers, vocab {vocab}, {args.type}, random weights (seed {args.seed})")
  res = write_gguf(args.out, shape, args.type, arch, vocab, args.seed, name=f"random {arch} {args.type}")
  print(f"wrote {args.out}: {size_text(res['bytes'])} in {res['seconds']:.1f} s; tensors by type: "
        f"{', '.join(f'{k} {n}' for k, n in res['types'].items())}\nrun it: python3 edge-deploy/llm.py --gguf {args.out} --prompt Hi")
  return 0


if __name__ == "__main__":
  sys.exit(common.run_main(main, open_device=False))
