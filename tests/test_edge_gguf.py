"""edge-deploy's GGUF path (gguf_file.py, gguf_weights.py, gguf_model.py, llm.py --gguf) against independent references:
the gguf package (its writer makes the tiny files, its reader and dequantizer are the reference for every block type)
and a float64 numpy forward pass in Hugging Face's conventions (rotate-half RoPE on the un-permuted LLaMA weights).
Bad files are one line, exit 2. CPU, tiny models (dim 64, 2 layers, 4 heads over 2 KV heads, a 270-token BPE vocab)."""
import json, sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q, GGUFValueType as V  # noqa: E402

import common  # noqa: E402, F401  (before tinygrad: settles DEV)
from tinygrad import Tensor, GlobalCounters  # noqa: E402
from common import UserError  # noqa: E402
from conftest import bad_input, run_py  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge-deploy"
sys.path.insert(0, str(EDGE))
import llm  # noqa: E402
import gguf_file as gf, gguf_weights as gw, gguf_model as gm  # noqa: E402

DIM, LAYERS, HEADS, KV_HEADS, HIDDEN = 64, 2, 4, 2, 256
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q6_K]


# ---- tiny GGUF files, written with the gguf package ---------------------------------------------

def byte_level_vocab() -> tuple[list[str], list[int], list[str]]:
  """GPT-2's byte-to-unicode alphabet (256 tokens), a few merges and the special tokens: (tokens, types, merges)."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable: chars[b] = chr(b)
    else: chars[b], extra = chr(256 + extra), extra + 1
  merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "h i", "Ġ hi"]
  specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
  tokens = [chars[b] for b in range(256)] + [m.replace(" ", "") for m in merges] + specials
  return tokens, [1] * (256 + len(merges)) + [3] * len(specials), merges


TOKENS, TOKEN_TYPES, MERGES = byte_level_vocab()
VOCAB = len(TOKENS)
BOS, EOS = TOKENS.index("<|begin_of_text|>"), TOKENS.index("<|end_of_text|>")


def packed(w: np.ndarray, qt: Q, rng) -> np.ndarray:
  """w (rows, K) in block type qt, as gguf's writer takes it. gguf cannot quantize K-quants: those get random blocks
  with fp16 scales sized so that the weights have about w's spread (other types: random bytes)."""
  if qt == Q.F32: return w.astype(np.float32)
  if qt == Q.F16: return w.astype(np.float16)
  if qt in (Q.BF16, Q.Q8_0, Q.Q4_0): return gguf.quants.quantize(w.astype(np.float32), qt)
  per, nbytes = gguf.GGML_QUANT_SIZES[qt]
  blocks = rng.integers(0, 256, size=(w.shape[0], w.shape[1] // per, nbytes), dtype=np.uint8)
  if qt not in (Q.Q4_K, Q.Q6_K): return blocks.reshape(w.shape[0], -1)          # a type the model refuses: any bytes
  std = w.std()
  def f16(values): return np.frombuffer(values.astype(np.float16).tobytes(), np.uint8).reshape(*blocks.shape[:2], 2)
  d = rng.uniform(0.5, 1.5, size=blocks.shape[:2]) * std / (270 if qt == Q.Q4_K else 1420)    # make_gguf.random_kquant's spreads
  if qt == Q.Q4_K: blocks[..., 0:2], blocks[..., 2:4] = f16(d), f16(7.5 * d * rng.uniform(0.8, 1.2, size=d.shape))
  else: blocks[..., 208:210] = f16(d)
  return blocks.reshape(w.shape[0], -1)


ARCH_DEFAULTS = {
  # llama: every block type in one model, untied head, LLaMA 3's rope_freqs factors
  "llama": dict(types={"token_embd": Q.Q4_0, "attn_q": Q.Q8_0, "attn_k": Q.F16, "attn_v": Q.BF16, "attn_output": Q.Q4_0,
                       "ffn_gate": Q.Q8_0, "ffn_up": Q.F32, "ffn_down.0": Q.Q4_K, "ffn_down.1": Q.Q6_K, "output": Q.Q8_0},
                tied=False, rope_freqs=True, head_dim=None),
  # qwen2: q/k/v biases, tied output head
  "qwen2": dict(types={"token_embd": Q.Q8_0, "ffn_down.0": Q.Q6_K, "ffn_down.1": Q.Q4_K}, tied=True, rope_freqs=False, head_dim=None),
  # qwen3: q/k norms, a head dim (32) that is not dim / heads (16), as Qwen3 0.6B's 128 is not 1024 / 16
  "qwen3": dict(types={"token_embd": Q.Q8_0, "attn_q": Q.Q4_0, "ffn_down.0": Q.Q4_K, "ffn_down.1": Q.Q6_K}, tied=False,
                rope_freqs=False, head_dim=32),
}


def write_gguf(path: Path, arch: str = "llama", seed: int = 0, tokenizer: bool = True, alignment: int | None = None,
               extra_tensor: tuple[str, np.ndarray, Q] | None = None, extra_meta: dict | None = None, **over) -> Path:
  spec = {**ARCH_DEFAULTS.get(arch, ARCH_DEFAULTS["llama"]), **over}
  rng = np.random.default_rng(seed)
  hd = spec["head_dim"] or DIM // HEADS
  w = gguf.GGUFWriter(str(path), arch)
  if alignment: w.add_custom_alignment(alignment)
  for key, value in {"context_length": 256, "embedding_length": DIM, "block_count": LAYERS, "feed_forward_length": HIDDEN,
                     "attention.head_count": HEADS, "attention.head_count_kv": KV_HEADS}.items(): w.add_uint32(f"{arch}.{key}", value)
  if spec["head_dim"]: w.add_uint32(f"{arch}.attention.key_length", hd)
  w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
  w.add_float32(f"{arch}.rope.freq_base", 10000.0)
  for key, value in (extra_meta or {}).items():
    if isinstance(value, str): w.add_string(f"{arch}.{key}", value)
    elif isinstance(value, int): w.add_uint32(f"{arch}.{key}", value)
    else: w.add_float32(f"{arch}.{key}", value)
  if tokenizer:
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "llama-bpe" if arch == "llama" else "qwen2")
    w.add_array("tokenizer.ggml.tokens", TOKENS)
    w.add_array("tokenizer.ggml.token_type", TOKEN_TYPES)
    w.add_array("tokenizer.ggml.merges", MERGES)
    w.add_uint32("tokenizer.ggml.bos_token_id", BOS)
    w.add_uint32("tokenizer.ggml.eos_token_id", EOS)
    w.add_bool("tokenizer.ggml.add_bos_token", arch == "llama")

  def tensor(name: str, shape: tuple[int, ...], std: float, qt=Q.F32, offset: float = 0.0):
    values = rng.standard_normal(shape) * std + offset
    w.add_tensor(name, packed(values.reshape(-1, shape[-1]), qt, rng) if len(shape) == 2 else values.astype(np.float32),
                 raw_dtype=qt if qt not in (Q.F32, Q.F16) else None)

  types = spec["types"]
  def qtype(role, i=None): return types.get(f"{role}.{i}", types.get(role, Q.Q8_0))
  tensor("token_embd.weight", (VOCAB, DIM), 1.0, qtype("token_embd"))
  tensor("output_norm.weight", (DIM,), 0.1, offset=1.0)
  if not spec["tied"]: tensor("output.weight", (VOCAB, DIM), 0.15, qtype("output"))
  if spec["rope_freqs"]: w.add_tensor("rope_freqs.weight", np.linspace(1.0, 8.0, hd // 2).astype(np.float32))
  for i in range(LAYERS):
    b = f"blk.{i}."
    for name, shape in (("attn_q", (HEADS * hd, DIM)), ("attn_k", (KV_HEADS * hd, DIM)), ("attn_v", (KV_HEADS * hd, DIM)),
                        ("attn_output", (DIM, HEADS * hd)), ("ffn_gate", (HIDDEN, DIM)), ("ffn_up", (HIDDEN, DIM)), ("ffn_down", (DIM, HIDDEN))):
      tensor(b + name + ".weight", shape, 0.25 if name in ("attn_q", "attn_k") else 0.12, qtype(name, i))
    tensor(b + "attn_norm.weight", (DIM,), 0.1, offset=1.0)
    tensor(b + "ffn_norm.weight", (DIM,), 0.1, offset=1.0)
    if arch == "qwen2":
      for name, n in (("attn_q", HEADS), ("attn_k", KV_HEADS), ("attn_v", KV_HEADS)): tensor(b + name + ".bias", (n * hd,), 0.3)
    if arch == "qwen3":
      tensor(b + "attn_q_norm.weight", (hd,), 0.1, offset=1.0)
      tensor(b + "attn_k_norm.weight", (hd,), 0.1, offset=1.0)
  if extra_tensor is not None: w.add_tensor(extra_tensor[0], extra_tensor[1], raw_dtype=extra_tensor[2])
  return finish(w, path)


def finish(writer, path: Path) -> Path:
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
  folder = tmp_path_factory.mktemp("gguf")
  return {arch: write_gguf(folder / f"tiny-{arch}.gguf", arch, seed=i) for i, arch in enumerate(ARCH_DEFAULTS)}


@pytest.fixture(scope="module")
def models(files) -> dict[str, gm.GGUFModel]:
  """One model per file, shared: compiling its kernels is most of a test's time. A test sets .pos = 0 to start over
  (positions past it are overwritten before attention reads them)."""
  return {arch: gm.GGUFModel(*gm.open_checked(path)[:2], max_context=32) for arch, path in files.items()}


# ---- the reference: the gguf package's reader and dequantizer, a float64 forward pass -------------

def reference_tensors(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
  r = gguf.GGUFReader(str(path))
  meta = {f.name: f.contents() for f in r.fields.values()}
  tensors = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(tuple(int(n) for n in reversed(t.shape)))
             for t in r.tensors}
  return meta, tensors


def rmsnorm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
  return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def reference_logits(path: Path, ids: list[int], hf_pairs: bool = True) -> np.ndarray:
  """Logits (T, V) of every position, in float64. A GGUF llama's Wq/Wk rows are first put back in Hugging Face's order
  (llama.cpp's converter moved row j + hd/2 of each head next to row j); then every architecture rotates the halves
  (x_j, x_{j+hd/2}) as Hugging Face does. hf_pairs=False skips the un-permuting: the wrong convention, for a llama."""
  meta, t = reference_tensors(path)
  arch = meta["general.architecture"]
  H, Hkv, d = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"], meta[f"{arch}.embedding_length"]
  hd, eps, base = meta.get(f"{arch}.attention.key_length", d // H), meta[f"{arch}.attention.layer_norm_rms_epsilon"], meta[f"{arch}.rope.freq_base"]
  inv_freq = base ** (-np.arange(0, hd, 2) / hd) / t.get("rope_freqs.weight", np.ones(hd // 2))
  def hf_rows(W, heads): return W.reshape(heads, hd // 2, 2, -1).swapaxes(1, 2).reshape(W.shape) if arch == "llama" and hf_pairs else W
  def rotate_half(v, pos):                                 # v (hd,) at position pos
    c, s = np.cos(pos * inv_freq), np.sin(pos * inv_freq)
    return np.concatenate([v[:hd // 2] * c - v[hd // 2:] * s, v[hd // 2:] * c + v[:hd // 2] * s])
  x = t["token_embd.weight"][ids]
  T = len(ids)
  for i in range(meta[f"{arch}.block_count"]):
    p = lambda n: t[f"blk.{i}.{n}"]  # noqa: E731
    h = rmsnorm(x, p("attn_norm.weight"), eps)
    proj = {}
    for n, heads in (("q", H), ("k", Hkv), ("v", Hkv)):
      W = p(f"attn_{n}.weight")
      b = t.get(f"blk.{i}.attn_{n}.bias", np.zeros(W.shape[0]))
      if n in "qk": W, b = hf_rows(W, heads), hf_rows(b[:, None], heads)[:, 0]
      proj[n] = h @ W.T + b
    q, k, v = proj["q"].reshape(T, H, hd), proj["k"].reshape(T, Hkv, hd), proj["v"].reshape(T, Hkv, hd)
    if f"blk.{i}.attn_q_norm.weight" in t: q, k = rmsnorm(q, p("attn_q_norm.weight"), eps), rmsnorm(k, p("attn_k_norm.weight"), eps)
    q = np.array([[rotate_half(q[s, j], s) for j in range(H)] for s in range(T)])
    k = np.array([[rotate_half(k[s, j], s) for j in range(Hkv)] for s in range(T)])
    attn = np.zeros((T, H, hd))
    for j in range(H):
      kv = j // (H // Hkv)                                 # Hugging Face's repeat_kv: consecutive query heads share one
      for s in range(T):
        scores = k[:s + 1, kv] @ q[s, j] / np.sqrt(hd)
        e = np.exp(scores - scores.max())
        attn[s, j] = (e / e.sum()) @ v[:s + 1, kv]
    x = x + attn.reshape(T, H * hd) @ p("attn_output.weight").T
    h = rmsnorm(x, p("ffn_norm.weight"), eps)
    g = h @ p("ffn_gate.weight").T
    x = x + (g / (1 + np.exp(-g)) * (h @ p("ffn_up.weight").T)) @ p("ffn_down.weight").T
  return rmsnorm(x, t["output_norm.weight"], eps) @ t.get("output.weight", t["token_embd.weight"]).T


def rel_err(a, ref) -> float: return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


PROMPT = [BOS, 72, 105, 266, 33, 200, 17]


# ---- the container and the dequantizers ----------------------------------------------------------

@pytest.mark.parametrize("qt", TYPES, ids=lambda q: q.name)
def test_both_dequantizers_match_gguf_and_the_matvec_is_one_kernel_reading_the_packed_bytes(qt, tmp_path):
  rng = np.random.default_rng(int(qt))
  W = rng.standard_normal((48, 512)) * 0.3
  path = tmp_path / "w.gguf"
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_tensor("w", packed(W, qt, rng), raw_dtype=qt if qt not in (Q.F32, Q.F16) else None)
  finish(w, path)
  _, ref = reference_tensors(path)
  f = gf.GGUFFile(path)
  assert f.info("w").shape == (48, 512) and f.info("w").type_name == qt.name
  np.testing.assert_array_equal(f.dequantize("w"), ref["w"].astype(np.float32))                    # numpy, bit for bit
  np.testing.assert_array_equal(f.rows("w", [3, 0, 47, 3]), ref["w"][[3, 0, 47, 3]].astype(np.float32))   # some rows alone
  # every field handed to the device can be taken by ctypes.from_buffer, as tinygrad's CUDA copy-in takes it
  # (a read-only mapping failed there for F16, whose bytes are passed on without a copy)
  import ctypes
  for v in f.parts("w").values(): ctypes.c_char.from_buffer(np.ascontiguousarray(v))
  wt = gw.load_weight(f, "w")
  assert wt.nbytes() == f.info("w").nbytes                                                         # the file's bytes, no more
  np.testing.assert_array_equal(wt.dequantize().numpy(), ref["w"].astype(np.float32))              # tinygrad, bit for bit
  x = Tensor(rng.standard_normal((1, 512)).astype(np.float32)).realize()
  GlobalCounters.reset()
  y = gw.linear(x, wt).realize()
  assert GlobalCounters.kernel_count == 1                                                          # dequant fused into the matvec
  assert GlobalCounters.global_mem == wt.nbytes() + 512 * 4 + 48 * 4                               # W's packed bytes, x and y, once
  assert rel_err(y.numpy(), x.numpy().astype(np.float64) @ ref["w"].T) < 1e-5


def test_reader_decodes_every_metadata_type_and_a_custom_alignment(tmp_path):
  path = tmp_path / "meta.gguf"
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_custom_alignment(64)
  values = {"u8": (7, V.UINT8), "i8": (-7, V.INT8), "u16": (60000, V.UINT16), "i16": (-30000, V.INT16), "u32": (4_000_000_000, V.UINT32),
            "i32": (-2_000_000_000, V.INT32), "f32": (0.5, V.FLOAT32), "bool": (True, V.BOOL), "str": ("héllo", V.STRING),
            "u64": (2**63 + 5, V.UINT64), "i64": (-2**62, V.INT64), "f64": (1 / 3, V.FLOAT64)}
  for k, (v, t) in values.items(): w.add_key_value(f"t.{k}", v, t)
  w.add_key_value("t.ints", [1, -2, 3], V.ARRAY, sub_type=V.INT16)
  w.add_key_value("t.floats", [0.25, 1.5], V.ARRAY, sub_type=V.FLOAT64)
  w.add_array("t.strings", ["a", "", "ü"])
  w.add_tensor("a", np.arange(5, dtype=np.float32))
  w.add_tensor("b", np.arange(6, dtype=np.float16).reshape(2, 3))
  finish(w, path)
  f, r = gf.GGUFFile(path), gguf.GGUFReader(str(path))
  assert f.version == 3 and f.alignment == 64 and f.data_offset % 64 == 0
  for k, (v, _) in values.items(): assert f.metadata[f"t.{k}"] == pytest.approx(v) if isinstance(v, float) else f.metadata[f"t.{k}"] == v
  assert f.metadata["t.ints"] == [1, -2, 3] and f.metadata["t.floats"] == [0.25, 1.5] and f.metadata["t.strings"] == ["a", "", "ü"]
  for t in r.tensors: assert f.tensors[t.name].offset == t.data_offset                        # the tensor data where gguf finds it
  np.testing.assert_array_equal(f.dequantize("b"), np.arange(6).reshape(2, 3))


def corrupt(src: Path, dst: Path, edit) -> Path:
  dst.write_bytes(edit(bytearray(src.read_bytes())))
  return dst


def bad_files(good: Path, folder: Path) -> dict[str, tuple[Path, str]]:
  """name -> (a broken file, a fragment its one-line error names)."""
  header_end = gf.GGUFFile(good).data_offset
  return {
    "not a GGUF": (corrupt(good, folder / "png.gguf", lambda b: b"\x89PNG" + b[4:]), "not a GGUF file"),
    "version": (corrupt(good, folder / "v1.gguf", lambda b: b[:4] + (1).to_bytes(4, "little") + b[8:]), "version 1 is not supported"),
    "truncated header": (corrupt(good, folder / "cut-header.gguf", lambda b: b[:header_end // 2]), "truncated"),
    "truncated data": (corrupt(good, folder / "cut-data.gguf", lambda b: b[:len(b) - 100]), "truncated"),
    "architecture": (write_gguf(folder / "mamba.gguf", "mamba"), "architecture 'mamba' is not supported"),
    "quant type": (write_gguf(folder / "q5k.gguf", types={"ffn_down.1": Q.Q5_K}), "Q5_K"),
    "no tokenizer": (write_gguf(folder / "notok.gguf", tokenizer=False), "no tokenizer"),
    "rope_freqs length": (write_gguf(folder / "freqs.gguf", "qwen2", extra_tensor=("rope_freqs.weight", np.ones(5, np.float32), Q.F32)),
                          "rope_freqs.weight has shape (5,), expected (8,)"),
  }


@pytest.mark.parametrize("case", ["not a GGUF", "version", "truncated header", "truncated data", "architecture", "quant type",
                                  "no tokenizer", "rope_freqs length"])
def test_bad_files_are_one_line_user_errors(case, files, tmp_path):
  path, fragment = bad_files(files["llama"], tmp_path)[case]
  with pytest.raises(UserError) as e: gm.open_checked(path)
  assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("keys,factor", [({}, 1.0), ({"rope.scaling.type": "linear", "rope.scaling.factor": 4.0}, 4.0),
                                         ({"rope.scaling.factor": 8.0}, 8.0), ({"rope.scale_linear": 2.0}, 2.0),
                                         ({"rope.scaling.type": "none", "rope.scaling.factor": 8.0}, 1.0)])
def test_rope_scaling_without_a_type_is_linear(keys, factor, tmp_path):
  path = write_gguf(tmp_path / "scaled.gguf", "qwen2", extra_meta=keys)
  assert gm.config_from_file(gf.GGUFFile(path)).rope_linear == factor


def test_mixture_of_experts_and_unknown_rope_scaling_are_one_line(tmp_path):
  with pytest.raises(UserError, match="mixture-of-experts models are not supported"):
    gm.open_checked(write_gguf(tmp_path / "moe.gguf", extra_meta={"expert_count": 8}))
  with pytest.raises(UserError, match="rope scaling 'yarn' is not supported"):
    gm.open_checked(write_gguf(tmp_path / "yarn.gguf", extra_meta={"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0}))


def test_a_short_read_anywhere_in_the_header_is_truncated(files, tmp_path):
  good = files["qwen3"].read_bytes()
  end = gf.GGUFFile(files["qwen3"]).data_offset
  for cut in np.linspace(4, end - 1, 25).astype(int):
    (tmp_path / "cut.gguf").write_bytes(good[:cut])
    with pytest.raises(UserError, match="truncated|not a GGUF"): gf.GGUFFile(tmp_path / "cut.gguf")


# ---- the model against the numpy reference ------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCH_DEFAULTS))
def test_prefill_and_decode_logits_match_a_float64_numpy_forward(arch, files, models):
  model = models[arch]
  model.pos = 0
  decoded = [5, 260, 99]
  ref = reference_logits(files[arch], PROMPT + decoded)
  got = [model.prefill(PROMPT, all_logits=True).numpy()] + [model.step(t)[0].numpy() for t in decoded]
  got = np.concatenate(got)
  assert got.shape == (len(PROMPT) + len(decoded), VOCAB)
  assert rel_err(got, ref) < 1e-4, (arch, rel_err(got, ref))        # fp32 on the device: about 1e-6 here
  if arch == "llama":             # the test can fail: rotating a GGUF llama's q/k in Hugging Face's halves is far off
    assert rel_err(got, reference_logits(files[arch], PROMPT + decoded, hf_pairs=False)) > 0.05


def test_prefill_then_decode_equals_feeding_token_by_token(models):
  model = models["llama"]
  model.pos = 0
  one_pass = model.prefill(PROMPT, all_logits=True).numpy()
  after = [model.step(t)[0].numpy() for t in (7, 8, 9)]
  model.pos = 0
  stepwise = [(logits.numpy(), greedy.item()) for logits, greedy in (model.step(t) for t in PROMPT)]   # read now: the JIT reuses its outputs
  np.testing.assert_allclose(one_pass, np.concatenate([s[0] for s in stepwise]), rtol=0, atol=1e-4 * np.abs(one_pass).max())
  assert [s[1] for s in stepwise] == list(one_pass.argmax(-1))                 # the JIT's greedy token is the argmax
  for t, a in zip((7, 8, 9), after): np.testing.assert_allclose(model.step(t)[0].numpy(), a, rtol=0, atol=1e-4 * np.abs(a).max())


def test_projections_of_one_input_and_one_block_type_are_stacked_into_one_matvec(models):
  # qwen2: q, k, v and gate, up all Q8_0 -> one matrix each; llama: every projection in another type -> kept apart
  qwen2, llama = models["qwen2"].w, models["llama"].w
  assert {"0.q_k_v", "0.gate_up"} <= set(qwen2) and not {"0.q", "0.k", "0.v", "0.gate", "0.up"} & set(qwen2)
  assert qwen2["0.q_k_v"].shape == ((HEADS + 2 * KV_HEADS) * DIM // HEADS, DIM) and qwen2["0.gate_up"].shape == (2 * HIDDEN, DIM)
  assert {"0.q", "0.k", "0.v", "0.gate", "0.up"} <= set(llama) and "0.q_k_v" not in llama


def test_the_split_prefill_check_passes_a_working_model_and_fails_a_broken_one(models):
  model = models["qwen2"]
  model.pos = 0
  full = model.prefill(PROMPT).numpy()[-1]
  assert gm.split_prefill_error(model, PROMPT, full) < 1e-5
  model.pos = 0
  other = model.prefill(PROMPT[:-1] + [PROMPT[-1] + 1]).numpy()[-1]
  assert gm.split_prefill_error(model, PROMPT, other) > 1e-2          # logits of another last token: far off


def test_a_decode_step_reads_each_weight_byte_once(models):
  model = models["llama"]
  model.pos = 0
  model.prefill(PROMPT, all_logits=True)
  for t in (1, 2): model.step(t)                                                # JIT warm-up and capture
  kernels, mem = gm.step_counters(model, 3)
  weights, kv = model.weight_bytes_per_token(), model.kv_bytes_read(model.pos - 1)
  assert kernels == model.kernels_per_token() > 0
  # tinygrad's estimate: the packed weights once, the KV read, and activations (a few kB at dim 64)
  assert weights <= mem <= weights + kv + 64_000, (mem, weights, kv)


def test_sampling_is_greedy_at_zero_temperature_and_follows_top_p():
  rng = np.random.default_rng(0)
  logits = np.array([2.0, 1.0, 0.5, -1.0, 1.9])
  assert gm.sample(logits, 0.0, 1.0, rng) == 0
  assert {gm.sample(logits, 1.0, 0.3, rng) for _ in range(50)} == {0}          # the top token alone holds 39 %
  draws = np.bincount([gm.sample(logits, 1.0, 1.0, rng) for _ in range(4000)], minlength=5) / 4000
  np.testing.assert_allclose(draws, np.exp(logits) / np.exp(logits).sum(), atol=0.03)
  assert set(np.unique([gm.sample(logits, 1.0, 0.6, rng) for _ in range(300)])) == {0, 4}   # 0.39 + 0.36 reach 0.6


class StubTokenizer:
  """Token ids as text (gguf_tokenizer.py is tested on its own)."""
  def __init__(self, eos): self.eos_ids = {eos}
  def decode(self, ids): return "".join(f"<{i}>" for i in ids)
  def decode_stream(self): return StubStream()


class StubStream:
  def __call__(self, i): return f"<{i}>"
  def flush(self): return ""


def test_generate_streams_the_text_and_stops_at_eos_or_max_tokens(files, models, capsys):
  model = models["qwen3"]                      # untied: its greedy text varies (a tied random model repeats its last token)
  gen = gm.generate(model, StubTokenizer(eos=-1), PROMPT, max_tokens=6)
  assert len(gen.ids) == 6 and gen.stopped == "max tokens" and capsys.readouterr().out == gen.text + "\n"
  assert len(gen.decode_s.warmup_s) == 2 and len(gen.decode_s.samples_s) == 3 and len(gen.prefill_s.samples_s) == 1
  ref = reference_logits(files["qwen3"], PROMPT + gen.ids[:-1])[len(PROMPT) - 1:]
  assert gen.ids == [int(i) for i in ref.argmax(-1)]                           # greedy: the reference's argmax each step
  again = gm.generate(model, StubTokenizer(eos=gen.ids[3]), PROMPT, max_tokens=6)
  assert len(set(gen.ids[:4])) == 4 and again.ids == gen.ids[:3] and again.stopped == "eos"


# ---- the command line -------------------------------------------------------------------------

def parse(argv: list[str]):
  p = common.project_parser("edge-deploy", llm.__doc__, save_help=None)
  llm.add_flags(p)
  gm.add_flags(p)
  args = p.parse_args(argv)
  return gm.chosen(p, args), args


@pytest.mark.parametrize("argv,needle", [
  (["--gguf", "/nonexistent.gguf"], "no such file"),
  (["--gguf", "/tmp"], "not a file"),
  (["--prompt", "hi"], "--prompt is a setting of --gguf"),
  (["--max-tokens", "0"], "max-tokens"),
  (["--top-p", "0"], "top-p"),
  (["--temperature", "-1"], "temperature"),
])
def test_bad_flags_are_one_line_argparse_errors(argv, needle, capsys):
  with pytest.raises(SystemExit) as e: parse(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_gguf_flags_and_the_random_weight_flags_exclude_each_other(files, capsys):
  assert parse(["--gguf", str(files["llama"]), "--prompt", "x"])[0] and not parse([])[0]
  with pytest.raises(SystemExit): parse(["--gguf", str(files["llama"]), "--llm-config", "tiny"])
  assert "--llm-config does not apply to --gguf" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e: parse(["--gguf", str(files["llama"]), "--top-p", "0.9"])
  assert e.value.code == 2 and "--top-p needs --temperature" in capsys.readouterr().err
  assert parse(["--gguf", str(files["llama"]), "--top-p", "0.9", "--temperature", "0.7"])[0]


@pytest.mark.parametrize("case", ["not a GGUF", "truncated data", "architecture", "quant type", "no tokenizer"])
def test_bad_files_through_the_command_line_are_one_line_exit_2(case, files, tmp_path):
  path, fragment = bad_files(files["llama"], tmp_path)[case]
  bad_input(str(EDGE / "llm.py"), "--gguf", str(path), "--max-tokens", "2", fragments=(fragment,))


@pytest.mark.slow
def test_llm_py_runs_a_gguf_end_to_end_and_reports(files, tmp_path):
  pytest.importorskip("gguf_tokenizer")
  from common.bench import validate
  out = tmp_path / "g.json"
  r = run_py(str(EDGE / "llm.py"), "--gguf", str(files["llama"]), "--prompt", "hi", "--max-tokens", "4", "--quick", "--json", str(out))
  assert r.returncode == 0, r.stderr[-3000:]
  for needle in ("prefill tok/s", "decode tok/s", "weight bytes / token", "% of copy", "PASS"): assert needle in r.stdout, r.stdout
  records = {rec["case"]: rec for rec in validate(json.loads(out.read_text()))}
  dec = records["gguf decode tiny-llama"]
  model = gm.GGUFModel(*gm.open_checked(files["llama"])[:2], 8)
  assert dec["generated_tokens"] == 4 and dec["weight_bytes_per_token"] == model.weight_bytes_per_token()
  assert dec["achieved_GBps"] > 0 and 0 < dec["fraction_of_copy_bw"] and "gguf prefill 2 tokens tiny-llama" in records
  assert dec["file"] == "tiny-llama.gguf" and dec["file_type"] == "not stated" and "Q8_0 x" in dec["block_types"]
