"""edge-deploy/make_gguf.py: GGUF files with random weights of a real model's shape, written without the gguf package.
Each file is read back by gguf_file.GGUFFile and by the gguf package's reader (the independent reference), the two
dequantizers agree bit for bit, the Q8_0/Q4_0 bytes equal gguf's own quantizer's, block types follow llama.cpp's
Q4_K_M rules, the tokenizer loads and encodes, and llm.py --gguf runs the file. CPU, files of a few hundred kB."""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import common  # noqa: F401  (before tinygrad: settles DEV)
from conftest import bad_input, run_py

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge-deploy"
sys.path.insert(0, str(EDGE))
import make_gguf as mg  # noqa: E402
import gguf_file as gf, gguf_model as gm  # noqa: E402
from gguf_tokenizer import Tokenizer  # noqa: E402
from llm import LLAMA_CONFIGS, parse_llama_config  # noqa: E402

TYPES = list(mg.FILE_TYPES)
KSHAPE = parse_llama_config("256,2,4,2,512,400")      # rows of 256 and 512: whole K-quant blocks, unlike tiny's 64


def write(tmp_path: Path, file_type: str, shape=LLAMA_CONFIGS["tiny"], arch: str = "llama", vocab: int = 300, seed: int = 0) -> Path:
  path = tmp_path / f"{arch}-{file_type}.gguf"
  mg.write_gguf(path, shape, file_type, arch, vocab, seed, log=lambda *a, **k: None)
  return path


def reference(path: Path) -> tuple[dict, dict]:
  """The gguf package's view: metadata and name -> (numpy shape, type name, absolute offset, dequantized values)."""
  gguf = pytest.importorskip("gguf")
  r = gguf.GGUFReader(str(path))
  meta = {f.name: f.contents() for f in r.fields.values()}
  tensors = {t.name: (tuple(int(n) for n in reversed(t.shape)), t.tensor_type.name, t.data_offset, gguf.quants.dequantize(t.data, t.tensor_type))
             for t in r.tensors}
  return meta, tensors


@pytest.mark.parametrize("file_type", TYPES)
def test_tiny_in_each_type_reads_back_as_written_and_as_the_gguf_package_reads_it(file_type, tmp_path):
  path = write(tmp_path, file_type)
  f = gf.GGUFFile(path)
  cfg = gm.config_from_file(f)
  want = mg.gguf_config(LLAMA_CONFIGS["tiny"], "llama", 300)
  assert cfg == replace(want, norm_eps=float(np.float32(want.norm_eps)))             # the model's view of the metadata (ε an f32)
  assert f.version == 3 and f.alignment == 32 and f.metadata["general.file_type"] == mg.FILE_TYPES[file_type]
  assert f.metadata["llama.context_length"] == 131072 and f.metadata["llama.rope.freq_base"] == 500000.0
  assert gm.check_tensors(f, cfg) == sum(t.nbytes for t in f.tensors.values())      # every tensor the model reads, no other
  meta, ref = reference(path)
  assert {k: meta[k] for k in ("general.architecture", "llama.embedding_length", "llama.block_count", "llama.attention.head_count_kv",
                               "tokenizer.ggml.bos_token_id")} == {"general.architecture": "llama", "llama.embedding_length": 64,
                                                                   "llama.block_count": 2, "llama.attention.head_count_kv": 2,
                                                                   "tokenizer.ggml.bos_token_id": 300 - 7}
  assert meta["tokenizer.ggml.tokens"] == f.metadata["tokenizer.ggml.tokens"] and meta["tokenizer.ggml.merges"] == f.metadata["tokenizer.ggml.merges"]
  assert set(ref) == set(f.tensors)
  matrices = {name for name, info in f.tensors.items() if len(info.shape) == 2}
  # tiny's rows of 64 are no whole 256-value K-quant block: those fall back to Q8_0, and the tied table of Q4_0's Q6_K too
  expect = {"F16": "F16", "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q4_K": "Q8_0", "Q6_K": "Q8_0"}[file_type]
  for name, info in f.tensors.items():
    shape, kind, offset, values = ref[name]
    assert info.shape == shape and info.type_name == kind and info.offset == offset
    assert kind == ("F32" if name not in matrices else "Q8_0" if name == "token_embd.weight" and file_type == "Q4_0" else expect)
    np.testing.assert_array_equal(f.dequantize(name), values.reshape(shape))       # the two dequantizers, bit for bit
  assert path.stat().st_size == f.data_offset + sum(-(-t.nbytes // 32) * 32 for t in f.tensors.values())


def test_k_quant_files_follow_llama_cpp_q4_k_m_and_q6_k_rules(tmp_path):
  assert [i for i in range(16) if mg.more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]   # LLaMA 3.2 1B's Q6_K layers in Q4_K_M
  more = ("token_embd.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight")          # tied table = output head; layer 1 of 2
  for file_type, kind in (("Q4_K", lambda n: "Q6_K" if n in more else "Q4_K"), ("Q6_K", lambda n: "Q6_K"),
                          ("Q4_0", lambda n: "Q6_K" if n == "token_embd.weight" else "Q4_0")):
    path = write(tmp_path, file_type, KSHAPE, vocab=400)
    f, (_, ref) = gf.GGUFFile(path), reference(path)
    assert {n: t.type_name for n, t in f.tensors.items()} == {n: kind(n) if len(t.shape) == 2 else "F32" for n, t in f.tensors.items()}
    for name in f.tensors:
      values = f.dequantize(name)
      np.testing.assert_array_equal(values, ref[name][3].reshape(values.shape))
      if len(values.shape) == 2: assert 0.015 < values.std() < 0.03 and np.isfinite(values).all(), (name, values.std())


def test_q8_0_and_q4_0_bytes_equal_the_gguf_package_quantizer():
  gguf = pytest.importorskip("gguf")
  rng = np.random.default_rng(1)
  w = (rng.standard_normal((24, 256)) * 0.02).astype(np.float32)
  w[3] = 0                                                                       # d = 0: the codes are 0 (Q8_0) and 8 (Q4_0)
  w[5, :32] = np.linspace(-1, 1, 32)                                             # halves and the exact maximum
  for kind, ours in (("Q8_0", mg.quantize_q8_0), ("Q4_0", mg.quantize_q4_0)):
    qt = gguf.GGMLQuantizationType[kind]
    np.testing.assert_array_equal(ours(w), gguf.quants.quantize(w, qt))
    back = gf.dequantize_parts(kind, gf.split_blocks(kind, ours(w).reshape(-1), w.shape))
    d = np.abs(w.reshape(24, 8, 32)).max(-1, keepdims=True) / (127 if kind == "Q8_0" else 8)
    bound = d * (0.5 if kind == "Q8_0" else 1.0) + np.abs(w).reshape(24, 8, 32) * 2**-10    # half a step (Q4_0: −max clips to 7d), fp16 d
    assert (np.abs(back - w).reshape(24, 8, 32) <= bound).all()


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_qwen_files_carry_biases_or_qk_norms_and_a_chatml_tokenizer(arch, tmp_path):
  path = write(tmp_path, "Q8_0", arch=arch)
  f = gf.GGUFFile(path)
  cfg = gm.config_from_file(f)
  assert (cfg.arch, cfg.qkv_bias, cfg.qk_norm) == (arch, arch == "qwen2", arch == "qwen3")
  gm.check_tensors(f, cfg)
  tok = Tokenizer.from_gguf_metadata(f.metadata)
  assert tok.chat_template_name == "chatml" and not tok.add_bos and tok.token_to_id["<|im_end|>"] in tok.eos_ids
  assert tok.decode(tok.encode("The capital of France is")) == "The capital of France is"


def test_the_llama_tokenizer_loads_merges_and_has_the_llama3_specials(tmp_path):
  f = gf.GGUFFile(write(tmp_path, "F16", vocab=4096))
  tok = Tokenizer.from_gguf_metadata(f.metadata)
  assert tok.vocab_size == 4096 == f.info("token_embd.weight").shape[0] and tok.chat_template_name == "llama3"
  assert tok.tokens[-256:][:2] == ["<|begin_of_text|>", "<|end_of_text|>"] and tok.tokens[-1] == "<|reserved_special_token_248|>"
  assert tok.encode("hi") == [tok.bos_id, tok.token_to_id["hi"]]                            # a merged token
  ids = tok.encode("The capital of France is")
  assert len(ids) < 1 + len("The capital of France is") and tok.decode(ids) == "The capital of France is"
  assert tok.encode("<|eot_id|>")[1] in tok.eos_ids
  merged = set(tok.tokens[256:-256])
  assert all(a + b in merged and (len(a) == 1 or a in merged) for a, b in (m.split(" ") for m in f.metadata["tokenizer.ggml.merges"]))


@pytest.mark.parametrize("argv,fragment", [
  (["{tmp}", "--shape", "tiny"], "is a folder"),
  (["{tmp}/x.gguf", "--shape", "huge"], "neither a preset"),
  (["{tmp}/x.gguf", "--shape", "tiny", "--vocab-tokens", "100"], "at least 295"),
  (["{tmp}/x.gguf", "--type", "Q5_K"], "invalid choice"),
])
def test_bad_arguments_are_one_line_exit_2(argv, fragment, tmp_path):
  bad_input(str(EDGE / "make_gguf.py"), *(a.format(tmp=tmp_path) for a in argv), fragments=(fragment,))
  assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.tmp*"))


@pytest.mark.slow
def test_the_command_writes_a_file_that_llm_py_runs(tmp_path):
  path = tmp_path / "k.gguf"
  r = run_py(str(EDGE / "make_gguf.py"), str(path), "--shape", "256,2,4,2,512,400", "--type", "Q4_K", "--seed", "3")
  assert r.returncode == 0 and "blk.1" in r.stdout and "Q6_K 3" in r.stdout, r.stdout + r.stderr[-2000:]
  r = run_py(str(EDGE / "llm.py"), "--gguf", str(path), "--prompt", "hi", "--max-tokens", "3", "--quick")
  assert r.returncode == 0 and "generated tokens | 3" in r.stdout and "PASS" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_sizes_are_printed_in_a_unit_that_fits():
  assert [mg.size_text(n) for n in (2_475_000_000, 803_400_000, 12_345, 416)] == ["2.475 GB", "803.4 MB", "12.3 kB", "416 B"]
