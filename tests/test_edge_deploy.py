"""edge-deploy/edge_optimize.py: quantization, distillation loss, planner, fusion counts and the LLM decode
against independent references (numpy, closed forms, tinygrad's own allocator), plus end-to-end runs."""
import importlib.util, json, math, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

import common  # noqa: F401  (before tinygrad: settles DEV)
from tinygrad import Tensor, GlobalCounters, dtypes
from common.bench import validate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "edge-deploy" / "edge_optimize.py"
spec = importlib.util.spec_from_file_location("edge_optimize", SCRIPT)
eo = importlib.util.module_from_spec(spec)
sys.modules["edge_optimize"] = eo
spec.loader.exec_module(eo)


def run(*args, timeout=240, env=None):
  return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


# ---- int8 quantization ------------------------------------------------------------------------

def test_int8_round_trip_error_is_at_most_half_a_step():
  rng = np.random.default_rng(0)
  W = (rng.standard_normal((24, 40)) * rng.uniform(0.01, 3, size=(24, 1))).astype(np.float32)
  W[3] = 0.0                                                    # an all-zero channel must not divide by zero
  qw = eo.quantize_int8(Tensor(W), dtype=dtypes.float32)
  q, s = qw.q.numpy(), qw.scale.numpy()
  assert qw.q.dtype == dtypes.int8 and q.min() >= -127 and q.max() <= 127
  np.testing.assert_allclose(s, np.maximum(np.abs(W).max(1) / 127, 1e-12), rtol=1e-6)
  assert (np.abs(q[np.arange(24) != 3]).max(1) == 127).all()    # each channel's largest weight uses the full range
  err = np.abs(W - q.astype(np.float32) * s[:, None])
  assert (err <= s[:, None] / 2 * (1 + 1e-5) + 1e-9).all()
  np.testing.assert_allclose(qw.dequantize().numpy(), q * s[:, None], rtol=1e-6)
  assert qw.nbytes() == W.size + 24 * 4


def test_precisions_have_the_dtypes_they_claim_and_match_fp32():
  Tensor.manual_seed(0)
  w = {k: v.realize() for k, v in eo.cnn_init(8).items()}
  x = Tensor(np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32))
  ref = eo.cnn_forward(eo.to_precision(w, "fp32"), x).numpy()
  w16, w8 = eo.to_precision(w, "fp16"), eo.to_precision(w, "int8")
  assert all(v.dtype == dtypes.half for v in w16.values())
  assert all(v.q.dtype == dtypes.int8 and v.scale.dtype == dtypes.half for k, v in w8.items() if k.endswith("weight"))
  assert all(v.dtype == dtypes.half for k, v in w8.items() if k.endswith("bias"))
  out16, out8 = eo.cnn_forward(w16, x.half()), eo.cnn_forward(w8, x.half())
  assert out16.dtype == dtypes.half and out8.dtype == dtypes.half
  scale = np.abs(ref).max()
  assert np.abs(out16.numpy().astype(np.float32) - ref).max() / scale < 1e-2      # fp16 rounding: ~1e-3 relative
  assert np.abs(out8.numpy().astype(np.float32) - ref).max() / scale < 5e-2       # int8 weights: ~1e-2 relative
  assert eo.weight_nbytes(w16) * 2 == eo.weight_nbytes(eo.to_precision(w, "fp32"))
  assert eo.weight_nbytes(w8) < 0.6 * eo.weight_nbytes(w16)


def test_int8_dequantize_is_fused_into_the_matmul():
  x = Tensor.randn(1, 256, dtype=dtypes.half).realize()
  W = Tensor.randn(512, 256).realize()
  w16, w8 = W.half().realize(), eo.quantize_int8(W)
  k16, _ = eo.count_kernels(lambda: eo.linear(x, w16))
  k8, b8 = eo.count_kernels(lambda: eo.linear(x, w8))
  assert k16 == k8 == 1
  assert b8 < 512 * 256 * 2        # the kernel reads int8 weights, not a materialized fp16 copy


# ---- distillation loss ------------------------------------------------------------------------

def test_distillation_loss_matches_numpy():
  rng = np.random.default_rng(2)
  zs, zt = rng.standard_normal((8, 10)).astype(np.float32) * 3, rng.standard_normal((8, 10)).astype(np.float32) * 3
  y = rng.integers(0, 10, 8)
  T, alpha = 3.0, 0.6
  def log_softmax(z): return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
  pt = np.exp(log_softmax(zt / T))
  kl = (pt * (np.log(pt) - log_softmax(zs / T))).sum(-1).mean()
  ce = -log_softmax(zs)[np.arange(8), y].mean()
  expected = alpha * T * T * kl + (1 - alpha) * ce
  got = eo.distillation_loss(Tensor(zs), Tensor(zt), Tensor(y.astype(np.int32)), T, alpha).item()
  assert got == pytest.approx(expected, rel=1e-5)
  # alpha = 0 is plain cross-entropy; identical logits make the KL term vanish
  assert eo.distillation_loss(Tensor(zs), Tensor(zs), Tensor(y.astype(np.int32)), T, 1.0).item() == pytest.approx(0.0, abs=1e-6)


# ---- memory planner ---------------------------------------------------------------------------

def test_planner_arithmetic_by_hand():
  cfg = eo.LLAMA_CONFIGS["llama3.2-1b"]
  # LLaMA 3.2 1B: embed 128256*2048 (tied) + 16 layers * (attn 2048*2048*2 + 2*2048*512 + mlp 3*2048*8192 + 2 norms) + final norm
  assert cfg.params() == 128256 * 2048 + 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192 + 2 * 2048) + 2048 == 1_235_814_400
  assert eo.LLAMA_CONFIGS["llama3.1-8b"].params() == 8_030_261_248
  assert eo.LLAMA_CONFIGS["qwen3-0.6b"].params() == 596_049_920
  assert cfg.kv_bytes(8192) == 2 * 16 * 8 * 64 * 8192 * 2 == 268_435_456
  p = eo.plan(eo.ModelSpec("m", {"fp32": 1000}, act_elems=10, train_act_elems=30, act_dtype="fp32"), batch=4, training=True)
  assert (p["weights"], p["grads"], p["adam"], p["activations"], p["total"]) == (4000, 4000, 8000, 480, 16480)
  p = eo.plan(eo.ModelSpec("llm", {"fp16": cfg.params()}, llama=cfg), context=1024)
  per_token = cfg.params_read_per_token() * 2 + cfg.kv_bytes(1024)
  assert p["bytes_per_token"] == pytest.approx(per_token)
  assert p["tok_s_effective"] == pytest.approx(102e9 / per_token) and p["tok_s_peak"] == pytest.approx(204.8e9 / per_token)
  assert eo.resnet50_counts()[0] == 25_557_032        # torchvision's ResNet-50 parameter count


def test_planner_matches_tinygrads_measured_memory():
  cfg = eo.LLAMA_CONFIGS["tiny"]
  base = GlobalCounters.mem_used
  dec = eo.Decoder(cfg, eo.llama_init(cfg, dtypes.half), max_context=128)
  tok = Tensor([[1]], dtype=dtypes.int32).realize()
  for _ in range(3): _, tok = dec(tok)
  measured = GlobalCounters.mem_used - base
  planned = eo.plan(eo.ModelSpec("tiny", {"fp16": cfg.params()}, llama=cfg), context=128)["total"]
  assert abs(planned - measured) / measured < 0.10
  base = GlobalCounters.mem_used
  w = eo.to_precision(eo.cnn_init(8), "fp16")
  assert GlobalCounters.mem_used - base == eo.plan(eo.cnn_spec(8, "fp16"))["weights"]


# ---- fusion -----------------------------------------------------------------------------------

def test_fusion_kernel_counts():
  counts = {}
  for name, expr, inputs in eo.fusion_cases(quick=True):
    kf, bf = eo.count_kernels(lambda: expr(*inputs, lambda t: t))
    ku, bu = eo.count_kernels(lambda: expr(*inputs, lambda t: t.realize()))
    counts[name.split(" (")[0]] = (kf, ku)
    assert kf < ku and bf <= bu, name
  assert counts["elementwise chain"] == (1, 5)
  assert counts["matmul + bias + ReLU"] == (1, 3)
  # the unfused and fused versions compute the same thing
  x = Tensor.randn(64, 64).realize()
  np.testing.assert_allclose(eo.softmax_rows(x, lambda t: t).numpy(), eo.softmax_rows(x, lambda t: t.realize()).numpy(), rtol=1e-5)


# ---- LLM decode vs numpy ----------------------------------------------------------------------

def numpy_llama(cfg, w, tokens):
  """Full causal forward over `tokens` in float64 (no cache): logits (len, vocab). Textbook order: separate
  Wq, Wk, Wv, W_gate, W_up (row blocks of the script's fused matrices), the norm applied before each matmul,
  softmax normalized before multiplying V."""
  d, H, Hkv, hd = cfg.dim, cfg.heads, cfg.kv_heads, cfg.hd
  def norm(x, g): return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.norm_eps) * g
  inv = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2) / hd)
  ang = np.arange(len(tokens))[:, None] * inv[None]
  cos, sin = np.cos(ang), np.sin(ang)
  def rope(x):                      # x (T, heads, hd)
    x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
    c, s = cos[:, None], sin[:, None]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)
  x = w["embed"][tokens]
  T = len(tokens)
  for i in range(cfg.layers):
    wq, wk, wv = np.split(w[f"{i}.wqkv"], [H * hd, (H + Hkv) * hd])
    w_gate, w_up = np.split(w[f"{i}.w_gate_up"], 2)
    h = norm(x, w[f"{i}.attn_norm"])
    q = rope((h @ wq.T).reshape(T, H, hd))
    k = rope((h @ wk.T).reshape(T, Hkv, hd))
    v = (h @ wv.T).reshape(T, Hkv, hd)
    k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
    s = np.einsum("thd,uhd->htu", q, k) / math.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    x = x + np.einsum("htu,uhd->thd", p, v).reshape(T, H * hd) @ w[f"{i}.wo"].T
    h = norm(x, w[f"{i}.ffn_norm"])
    g = h @ w_gate.T
    x = x + ((g / (1 + np.exp(-g))) * (h @ w_up.T)) @ w[f"{i}.w_down"].T
  return norm(x, w["norm"]) @ w["embed"].T


@pytest.mark.parametrize("dtype,tol", [(dtypes.float32, 1e-4), (dtypes.half, 3e-2)])
def test_llm_decode_with_kv_cache_matches_numpy(dtype, tol):
  cfg = eo.LLAMA_CONFIGS["tiny"]
  Tensor.manual_seed(3)
  w = eo.llama_init(cfg, dtype, std=0.2)
  w_np = {k: v.numpy().astype(np.float64) for k, v in w.items()}
  tokens = [5, 17, 3, 250, 17, 99]
  ref = numpy_llama(cfg, w_np, np.array(tokens))
  dec = eo.Decoder(cfg, w, max_context=16, kv_dtype=dtype)     # an fp32 test needs an fp32 cache too
  for t, tok in enumerate(tokens):          # forced tokens: step t sees positions 0..t through the cache
    logits, _ = dec(Tensor([[tok]], dtype=dtypes.int32))
    got = logits.numpy()[0]
    assert np.abs(got - ref[t]).max() / np.abs(ref[t]).max() < tol, f"position {t}"
  # int8 weights stay close to the fp16/fp32 model
  dec8 = eo.Decoder(cfg, eo.llama_quantize(w), max_context=16)
  for t, tok in enumerate(tokens[:3]):
    l8, _ = dec8(Tensor([[tok]], dtype=dtypes.int32))
    assert np.abs(l8.numpy()[0] - ref[t]).max() / np.abs(ref[t]).max() < 0.1, f"int8, position {t}"
  # the layout: 11 kernels per layer (1/rms, qkv, KV write, scores, max, softmax·V, wo, 1/rms, gate|up, silu·up, down),
  # plus the embedding gather, the final mean(x²) and head, and greedy_token's four (two levels, max then index)
  assert dec.kernels_per_token() == dec8.kernels_per_token() == 11 * cfg.layers + 3 + 4


def test_rms_norm_then_matvec_is_two_kernels_and_matches_numpy():
  rng = np.random.default_rng(4)
  x, g, W = rng.standard_normal((1, 1, 96)) * 3, rng.uniform(0.5, 1.5, 96), rng.standard_normal((40, 96)) * 0.1
  ref = (x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g) @ W.T
  xt, gt, Wt = (Tensor(a.astype(np.float32)).realize() for a in (x, g, W))
  np.testing.assert_allclose(eo.linear(eo.rms_norm(xt, gt, 1e-5), Wt).numpy(), ref, rtol=1e-5, atol=1e-5)
  # mean(x²), then the matvec normalizing x as it loads it: the normalized x is never stored (that would be a third)
  assert eo.count_kernels(lambda: eo.linear(eo.rms_norm(xt, gt, 1e-5), Wt))[0] == 2
  W8 = eo.quantize_int8(Tensor(W.astype(np.float32)), dtype=dtypes.float32)    # per-row scales, dequantized in the same matvec
  assert eo.count_kernels(lambda: eo.linear(eo.rms_norm(xt, gt, 1e-5), W8))[0] == 2
  np.testing.assert_allclose(eo.linear(eo.rms_norm(xt, gt, 1e-5), W8).numpy(), ref, rtol=0.05, atol=0.02 * np.abs(ref).max())


@pytest.mark.parametrize("vocab", [7, 256, 1000, 5003])
def test_greedy_token_is_the_first_argmax(vocab):
  rng = np.random.default_rng(vocab)
  logits = rng.standard_normal((1, vocab)).astype(np.float32) - 100       # all negative: the −inf padding must never win
  assert eo.greedy_token(Tensor(logits)).numpy()[0, 0] == np.argmax(logits)
  logits[0, [vocab // 2, vocab // 3, vocab - 1]] = -1.0                  # a three-way tie: the first index wins
  assert eo.greedy_token(Tensor(logits)).numpy()[0, 0] == vocab // 3


def test_stream_kernel_adds_one():
  x = Tensor.arange(4096).float().contiguous().realize()
  np.testing.assert_array_equal(eo.stream_add_one(x).numpy(), np.arange(4096, dtype=np.float32) + 1)


# ---- end to end -------------------------------------------------------------------------------

def test_quick_demo_passes_its_checks(tmp_path):
  r = run("--quantize", "--memory", "--llm", "--matvec-fix", "0", "--quick", "--out", str(tmp_path), "--save", str(tmp_path / "cnn.safetensors"), timeout=400)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "FAIL" not in r.stdout and r.stdout.count("PASS") >= 5
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["quantize"]["fp32"]["accuracy"] >= 0.8
  assert s["quantize"]["int8"]["weight_bytes"] < 0.3 * s["quantize"]["fp32"]["weight_bytes"]
  assert all(abs(v["planned"] - v["measured"]) / v["measured"] < 0.1 for v in s["memory"]["validation"])
  assert set(s["llm"]) == {"0"}                     # one decode subprocess, MATVEC_FIX=0
  assert s["llm"]["0"]["runs"]["fp16"]["kernels_per_token"] > 0
  assert (tmp_path / "cnn_loss.png").stat().st_size > 0 and (tmp_path / "cnn.safetensors").stat().st_size > 0


def test_save_then_load_gives_back_the_same_model(tmp_path):
  from common.files import save_checkpoint
  Tensor.manual_seed(5)
  w = {k: v.realize() for k, v in eo.cnn_init(16).items()}
  save_checkpoint(w, tmp_path / "cnn.safetensors", {"width": 16})
  args = eo.parse_args(["--load", str(tmp_path / "cnn.safetensors"), "--quick"])
  loaded, losses = eo.trained_cnn(args, (None, None), tmp_path)
  assert losses == [] and set(loaded) == set(w)
  for k in w: np.testing.assert_array_equal(loaded[k].numpy(), w[k].numpy())


def test_bench_json_validates(tmp_path):
  dest = tmp_path / "bench.json"
  r = run("--bench", "--quick", "--json", str(dest), "--out", str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads(dest.read_text()))
  cases = {x["case"] for x in records}
  assert {"cnn fp32 b=64", "cnn int8 b=64", "llm decode fp16", "llm decode int8"} <= cases
  assert any(x["unit"] == "GFLOP/s" for x in records) and any(x["unit"] == "GB/s" for x in records)


@pytest.mark.parametrize("args,needle", [
  (["--load", "/nonexistent/cnn.safetensors"], "no such file"),
  (["--llm-config", "huge"], "llm-config"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
  r = run(*args, "--quick", "--quantize", "--out", str(tmp_path))
  assert r.returncode == 2 and needle in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,needle", [
  (["--alpha", "1.5"], "alpha"),
  (["--temperature", "0"], "temperature"),
  (["--llm-config", "64,2,3,2,128,256"], "divisible"),
  (["--beams", "0,-1"], "beams"),
  (["--sizes", "0"], "sizes"),
  (["--width", "0"], "width"),
  (["--matvec-fix", "2"], "matvec-fix"),
])
def test_bad_flags_are_one_line_argparse_errors(args, needle, capsys):
  with pytest.raises(SystemExit) as e: eo.parse_args(args)    # the same parser the script runs, in-process
  err = capsys.readouterr().err
  assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_checkpoint_of_the_wrong_model_is_refused(tmp_path):
  from common.files import save_checkpoint
  bad = tmp_path / "other.safetensors"
  save_checkpoint(eo.cnn_init(4), bad)
  with pytest.raises(common.UserError, match="shape"):
    eo.trained_cnn(eo.parse_args(["--quick", "--load", str(bad)]), (None, None), tmp_path)
  garbage = tmp_path / "garbage.safetensors"
  garbage.write_bytes(b"not a checkpoint")
  with pytest.raises(common.UserError, match="safetensors"):
    eo.trained_cnn(eo.parse_args(["--quick", "--load", str(garbage)]), (None, None), tmp_path)


def test_torch_reference_runs_the_same_workload(tmp_path):
  pytest.importorskip("torch")
  dest = tmp_path / "torch.json"
  r = subprocess.run([sys.executable, str(ROOT / "edge-deploy" / "torch_reference.py"), "--quick", "--json", str(dest)], cwd=ROOT,
                     capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads(dest.read_text()))
  assert {x["case"] for x in records} >= {"matmul 128 fp16", "llm decode fp16"} and records[0]["device"].startswith("torch:")


def test_missing_matvec_fix_is_reported_not_faked(tmp_path, monkeypatch):
  monkeypatch.setenv("MATVEC_FIX", "1")
  monkeypatch.setattr(common.SETUP, "matvec_fix", "not applied: backend has no install_matvec_fix")
  args = eo.parse_args(["--quick", "--json", str(tmp_path / "w.json")])
  assert eo.llm_worker(args) == 0
  doc = json.loads((tmp_path / "w.json").read_text())
  assert doc["llm"] == {"available": False, "reason": "not applied: backend has no install_matvec_fix"} and doc["records"] == []


def test_beam_mode_times_each_level_in_its_own_process(tmp_path):
  r = run("--beam", "--quick", "--beams", "0", "--out", str(tmp_path), "--json", str(tmp_path / "beam.json"))
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads((tmp_path / "beam.json").read_text()))
  assert len(records) == 4 and all(x["beam"] == 0 and x["case"].endswith("BEAM=0") for x in records)
  assert "| matmul 128x128 fp16 |" in r.stdout
