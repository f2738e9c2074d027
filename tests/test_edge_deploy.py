"""edge-deploy: quantization, distillation loss, planner, fusion counts and the LLM decode against independent
references (numpy, closed forms, tinygrad's own allocator); each lever script alone and edge_optimize.py over them;
bad input and unwritable outputs as one line, exit 2, before the work."""
import json, math, sys
from pathlib import Path

import numpy as np
import pytest

import common
from tinygrad import Tensor, GlobalCounters, dtypes
from common.bench import validate
from conftest import bad_input, run_py

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge-deploy"
sys.path.insert(0, str(EDGE))
import edge_common as ec  # noqa: E402
import edge_optimize, fusion_beam, llm, memory_plan, quantize  # noqa: E402


def script(name: str) -> str: return str(EDGE / name)


def parse_error(parse, argv, capsys) -> str:
  """An in-process parse that must fail as argparse does here: exit 2 and one line on stderr."""
  with pytest.raises(SystemExit) as e: parse(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
  return err


# ---- int8 quantization ------------------------------------------------------------------------

def test_int8_round_trip_error_is_at_most_half_a_step():
  rng = np.random.default_rng(0)
  W = (rng.standard_normal((24, 40)) * rng.uniform(0.01, 3, size=(24, 1))).astype(np.float32)
  W[3] = 0.0                                                    # an all-zero channel must not divide by zero
  qw = ec.quantize_int8(Tensor(W), dtype=dtypes.float32)
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
  w = {k: v.realize() for k, v in ec.cnn_init(8).items()}
  x = Tensor(np.random.default_rng(1).random((16, 1, 28, 28), dtype=np.float32))
  ref = ec.cnn_forward(ec.to_precision(w, "fp32"), x).numpy()
  w16, w8 = ec.to_precision(w, "fp16"), ec.to_precision(w, "int8")
  assert all(v.dtype == dtypes.half for v in w16.values())
  assert all(v.q.dtype == dtypes.int8 and v.scale.dtype == dtypes.half for k, v in w8.items() if k.endswith("weight"))
  assert all(v.dtype == dtypes.half for k, v in w8.items() if k.endswith("bias"))
  out16, out8 = ec.cnn_forward(w16, x.half()), ec.cnn_forward(w8, x.half())
  assert out16.dtype == dtypes.half and out8.dtype == dtypes.half
  scale = np.abs(ref).max()
  assert np.abs(out16.numpy().astype(np.float32) - ref).max() / scale < 1e-2      # fp16 rounding: ~1e-3 relative
  assert np.abs(out8.numpy().astype(np.float32) - ref).max() / scale < 5e-2       # int8 weights: ~1e-2 relative
  assert ec.weight_nbytes(w16) * 2 == ec.weight_nbytes(ec.to_precision(w, "fp32"))
  assert ec.weight_nbytes(w8) < 0.6 * ec.weight_nbytes(w16)
  assert ec.n_params(w) == ec.cnn_param_count(8)


def test_int8_dequantize_is_fused_into_the_matmul():
  x = Tensor.randn(1, 256, dtype=dtypes.half).realize()
  W = Tensor.randn(512, 256).realize()
  w16, w8 = W.half().realize(), ec.quantize_int8(W)
  k16, _ = ec.count_kernels(lambda: ec.linear(x, w16))
  k8, b8 = ec.count_kernels(lambda: ec.linear(x, w8))
  assert k16 == k8 == 1
  assert b8 < 512 * 256 * 2        # the kernel reads int8 weights, not a materialized fp16 copy


# ---- distillation loss ------------------------------------------------------------------------

def test_distillation_loss_matches_numpy():
  rng = np.random.default_rng(2)
  zs, zt = rng.standard_normal((8, 10)).astype(np.float32) * 3, rng.standard_normal((8, 10)).astype(np.float32) * 3
  y = rng.integers(0, 10, 8)
  yt = Tensor(y.astype(np.int32))
  T, alpha = 3.0, 0.6
  def log_softmax(z): return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
  pt = np.exp(log_softmax(zt / T))
  kl = (pt * (np.log(pt) - log_softmax(zs / T))).sum(-1).mean()
  ce = -log_softmax(zs)[np.arange(8), y].mean()
  assert quantize.distillation_loss(Tensor(zs), Tensor(zt), yt, T, alpha).item() == pytest.approx(alpha * T * T * kl + (1 - alpha) * ce, rel=1e-5)
  # alpha = 0 is plain cross-entropy, whatever the teacher says
  assert quantize.distillation_loss(Tensor(zs), Tensor(zt), yt, T, 0.0).item() == pytest.approx(ce, rel=1e-5)
  # alpha = 1 is the soft term alone, and identical logits make that KL term vanish
  assert quantize.distillation_loss(Tensor(zs), Tensor(zs), yt, T, 1.0).item() == pytest.approx(0.0, abs=1e-6)


# ---- memory planner ---------------------------------------------------------------------------

def test_planner_arithmetic_by_hand():
  cfg = llm.LLAMA_CONFIGS["llama3.2-1b"]
  # LLaMA 3.2 1B: embed 128256*2048 (tied) + 16 layers * (attn 2048*2048*2 + 2*2048*512 + mlp 3*2048*8192 + 2 norms) + final norm
  assert cfg.params() == 128256 * 2048 + 16 * (2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192 + 2 * 2048) + 2048 == 1_235_814_400
  assert llm.LLAMA_CONFIGS["llama3.1-8b"].params() == 8_030_261_248
  assert llm.LLAMA_CONFIGS["qwen3-0.6b"].params() == 596_049_920
  assert cfg.kv_bytes(8192) == 2 * 16 * 8 * 64 * 8192 * 2 == 268_435_456
  mp = memory_plan
  p = mp.plan(mp.ModelSpec("m", {"fp32": 1000}, act_elems=10, train_act_elems=30, act_dtype="fp32"), batch=4, training=True)
  assert (p["weights"], p["grads"], p["adam"], p["activations"], p["total"]) == (4000, 4000, 8000, 480, 16480)
  p = mp.plan(mp.ModelSpec("llm", {"fp16": cfg.params()}, llama=cfg), context=1024)
  per_token = cfg.params_read_per_token() * 2 + cfg.kv_bytes(1024)
  assert p["bytes_per_token"] == pytest.approx(per_token)
  assert p["tok_s_effective"] == pytest.approx(102e9 / per_token) and p["tok_s_peak"] == pytest.approx(204.8e9 / per_token)
  assert mp.resnet50_counts()[0] == 25_557_032        # torchvision's ResNet-50 parameter count


def test_planner_matches_tinygrads_measured_memory():
  cfg = llm.LLAMA_CONFIGS["tiny"]
  base = GlobalCounters.mem_used
  dec = llm.Decoder(cfg, llm.llama_init(cfg, dtypes.half), max_context=128)
  tok = Tensor([[1]], dtype=dtypes.int32).realize()
  for _ in range(3): _, tok = dec(tok)
  measured = GlobalCounters.mem_used - base
  planned = memory_plan.plan(memory_plan.ModelSpec("tiny", {"fp16": cfg.params()}, llama=cfg), context=128)["total"]
  assert abs(planned - measured) / measured < 0.10
  base = GlobalCounters.mem_used
  w = ec.to_precision(ec.cnn_init(8), "fp16")  # noqa: F841  (alive while counted)
  assert GlobalCounters.mem_used - base == memory_plan.plan(memory_plan.cnn_spec(8, "fp16"))["weights"]


def test_planner_counts_what_each_conv_form_keeps_for_the_backward_pass(monkeypatch):
  import common.conv
  extra = {}
  for form in ("conv2d", "gemm", "winograd"):
    monkeypatch.setattr(common.conv, "conv_form", lambda *a, form=form, **k: form)
    extra[form] = memory_plan.cnn_spec(8).train_act_elems
  # width 8: conv1 1->8 at 26², conv2 8->16 at 11² (it passes ∂L/∂x down)
  assert extra["gemm"] - extra["conv2d"] == 26 * 26 * 9 + 3 * 11 * 11 * 8 * 9             # patch matrices
  assert extra["winograd"] - extra["conv2d"] == 36 * 7 * 7 + 2 * 36 * 8 * 3 * 3            # 6x6 tiles per 4x4 output tile
# ---- fusion -----------------------------------------------------------------------------------

def test_fusion_kernel_counts():
  counts = {}
  for name, expr, inputs in fusion_beam.fusion_cases(quick=True):
    kf, bf = ec.count_kernels(lambda: expr(*inputs, fusion_beam.fused))
    ku, bu = ec.count_kernels(lambda: expr(*inputs, fusion_beam.unfused))
    counts[name.split(" (")[0]] = (kf, ku)
    assert kf < ku and bf <= bu, name
  assert counts["elementwise chain"] == (1, 5)
  assert counts["matmul + bias + ReLU"] == (1, 3)
  # the unfused and fused versions compute the same thing
  x = Tensor.randn(64, 64).realize()
  fused, unfused = fusion_beam.softmax_rows(x, fusion_beam.fused), fusion_beam.softmax_rows(x, fusion_beam.unfused)
  np.testing.assert_allclose(fused.numpy(), unfused.numpy(), rtol=1e-5)


def test_fusion_check_fails_when_fusion_saves_nothing(capsys):
  rows = [{"kernels_fused": 3, "kernels_unfused": 3, "bytes_fused": 10, "bytes_unfused": 10}]
  assert not fusion_beam.fusion_ok(rows) and "FAIL" in capsys.readouterr().out


# ---- LLM decode vs numpy ----------------------------------------------------------------------

def numpy_llama(cfg, w, tokens):
  """Full causal forward over `tokens` in float64 (no cache): logits (len, vocab). Textbook order: separate
  Wq, Wk, Wv, W_gate, W_up (row blocks of the script's fused matrices), the norm applied before each matmul,
  softmax normalized before multiplying V."""
  H, Hkv, hd = cfg.heads, cfg.kv_heads, cfg.hd
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
  cfg = llm.LLAMA_CONFIGS["tiny"]
  Tensor.manual_seed(3)
  w = llm.llama_init(cfg, dtype, std=0.2)
  w_np = {k: v.numpy().astype(np.float64) for k, v in w.items()}
  tokens = [5, 17, 3, 250, 17, 99]
  ref = numpy_llama(cfg, w_np, np.array(tokens))
  dec = llm.Decoder(cfg, w, max_context=16, kv_dtype=dtype)     # an fp32 test needs an fp32 cache too
  for t, tok in enumerate(tokens):          # forced tokens: step t sees positions 0..t through the cache
    logits, _ = dec(Tensor([[tok]], dtype=dtypes.int32))
    got = logits.numpy()[0]
    assert np.abs(got - ref[t]).max() / np.abs(ref[t]).max() < tol, f"position {t}"
  # int8 weights stay close to the fp16/fp32 model
  dec8 = llm.Decoder(cfg, llm.llama_quantize(w), max_context=16)
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
  np.testing.assert_allclose(ec.linear(llm.rms_norm(xt, gt, 1e-5), Wt).numpy(), ref, rtol=1e-5, atol=1e-5)
  # mean(x²), then the matvec normalizing x as it loads it: the normalized x is never stored (that would be a third)
  assert ec.count_kernels(lambda: ec.linear(llm.rms_norm(xt, gt, 1e-5), Wt))[0] == 2
  W8 = ec.quantize_int8(Tensor(W.astype(np.float32)), dtype=dtypes.float32)    # per-row scales, dequantized in the same matvec
  assert ec.count_kernels(lambda: ec.linear(llm.rms_norm(xt, gt, 1e-5), W8))[0] == 2
  np.testing.assert_allclose(ec.linear(llm.rms_norm(xt, gt, 1e-5), W8).numpy(), ref, rtol=0.05, atol=0.02 * np.abs(ref).max())


@pytest.mark.parametrize("vocab", [7, 256, 1000, 5003])
def test_greedy_token_is_the_first_argmax(vocab):
  rng = np.random.default_rng(vocab)
  logits = rng.standard_normal((1, vocab)).astype(np.float32) - 100       # all negative: the −inf padding must never win
  assert llm.greedy_token(Tensor(logits)).numpy()[0, 0] == np.argmax(logits)
  logits[0, [vocab // 2, vocab // 3, vocab - 1]] = -1.0                  # a three-way tie: the first index wins
  assert llm.greedy_token(Tensor(logits)).numpy()[0, 0] == vocab // 3


def test_stream_kernel_adds_one():
  x = Tensor.arange(4096).float().contiguous().realize()
  np.testing.assert_array_equal(ec.stream_add_one(x).numpy(), np.arange(4096, dtype=np.float32) + 1)


def test_decode_check_fails_when_int8_changes_nothing(capsys):
  """int8 logits identical to fp16 mean the int8 weights were never used: the check must fail, not pass."""
  assert not llm.decode_ok({"0": {"int8_vs_fp16_rel_err": 0.0}})
  assert not llm.decode_ok({"0": {"int8_vs_fp16_rel_err": None}})      # nan (e.g. DEV=NULL) fails too
  assert llm.decode_ok({"0": {"int8_vs_fp16_rel_err": 0.02}}) and "FAIL" in capsys.readouterr().out


def test_missing_matvec_fix_is_reported_not_faked(tmp_path, monkeypatch):
  monkeypatch.setenv("MATVEC_FIX", "1")
  monkeypatch.setattr(common.SETUP, "matvec_fix", "not applied: backend has no install_matvec_fix")
  from common.bench import Bench
  cfg = llm.DecodeConfig("tiny", llm.LLAMA_CONFIGS["tiny"], settings=("1",))
  bench, summary = Bench("edge-deploy"), {}
  assert llm.run(cfg, bench, tmp_path, summary) is False
  assert summary["llm"] == {"1": {"available": False, "reason": "not applied: backend has no install_matvec_fix"}} and bench.records == []


# ---- flags and outputs: one line, exit 2, before the work --------------------------------------

@pytest.mark.parametrize("args,needle", [
  (["--alpha", "1.5"], "alpha"),
  (["--alpha", "nan"], "alpha"),
  (["--temperature", "0"], "temperature"),
  (["--temperature", "inf"], "temperature"),
  (["--temperature", "nan"], "temperature"),
  (["--llm-config", "64,2,3,2,128,256"], "divisible"),
  (["--llm-config", "huge"], "llm-config"),
  (["--beams", "0,-1"], "beams"),
  (["--sizes", "0"], "sizes"),
  (["--width", "0"], "width"),
  (["--steps", "-5"], "steps"),
  (["--train-size", "3"], "train-size"),
  (["--llm-tokens", "10000000"], "llm-tokens"),
  (["--matvec-fix", "2"], "matvec-fix"),
  (["--worker", "llm"], "--worker"),                              # no hidden self-respawn flag any more
  (["--json", "/proc/edge.json"], "--json"),
  (["--save", "/proc/cnn.safetensors"], "--save"),
  (["--json", "/tmp"], "folder"),
  # flags that would be silently ignored: a lever's setting without its mode, outputs where nothing is written
  (["--memory", "--beams", "0,2"], "--beams is a setting of --beam"),
  (["--fusion", "--save", "cnn.safetensors"], "--save is a setting of"),
  (["--llm", "--temperature", "2"], "--temperature"),
  (["--memory", "--json", "m.json"], "times nothing"),
  (["--bench", "--quantize"], "--bench"),
  (["--bench", "--steps", "5"], "does not change --bench"),
])
def test_bad_flags_are_one_line_argparse_errors(args, needle, capsys):
  assert needle in parse_error(edge_optimize.parse_args, args, capsys)


@pytest.mark.parametrize("args,needle", [
  (["--student-width", "16"], "smaller than the teacher"),
  (["--load", "a.safetensors", "--save", "b.safetensors"], "nothing is trained"),
  (["--bench", "--load", "a.safetensors"], "untrained"),
  (["--sizes", "300000"], "needs about"),                        # three 300000² matrices: 1 TB, refused before allocating
])
def test_impossible_quantize_settings_are_refused_before_work(args, needle, capsys):
  assert needle in parse_error(quantize.parse_args, args, capsys)


def test_impossible_llm_sizes_are_refused_before_allocating(capsys):
  from common.cli import ArgumentParser
  def parse(argv):
    p = common.project_parser("edge-deploy", None, save_help=None)
    llm.add_flags(p)
    return llm.config(p, p.parse_args(argv))
  assert isinstance(parse(["--quick"]), llm.DecodeConfig)
  assert "needs about" in parse_error(parse, ["--llm-config", "65536,64,64,8,131072,262144"], capsys)
  assert "needs about" in parse_error(parse, ["--copy-mib", "1048576"], capsys)
  assert "--matvec-fix is for the demo" in parse_error(parse, ["--bench", "--matvec-fix", "1"], capsys)
  assert ArgumentParser   # the parser type the scripts share (common.cli)


def test_quick_changes_defaults_only():
  _, _, cfg = quantize.parse_args(["--quick", "--steps", "7", "--train-size", "300"])
  assert (cfg.steps, cfg.train_size, cfg.test_size) == (7, 300, 500)
  _, _, cfg = quantize.parse_args(["--quick"])
  assert (cfg.steps, cfg.train_size, cfg.test_size) == (150, 1000, 500)
  _, _, cfg = quantize.parse_args(["--quick", "--sizes", "64"])
  assert cfg.sizes == (64,)
  _, args, _ = edge_optimize.parse_args(["--quick", "--beams", "0,2", "--beam"])
  assert fusion_beam.config(None, args).beams == (0, 2)


@pytest.mark.parametrize("script_name,args,needle", [
  ("edge_optimize.py", ["--out", "/proc/edge-out"], "--out"),
  ("quantize.py", ["--out", "/dev/null"], "--out"),
  ("memory_plan.py", ["--json", "m.json"], "times nothing"),
  ("fusion_beam.py", ["--bench"], "--bench"),
  ("llm.py", ["--save", "x.safetensors"], "unrecognized"),      # random weights: nothing to save
])
def test_unwritable_or_meaningless_outputs_are_one_line(script_name, args, needle, tmp_path):
  bad_input(script(script_name), "--quick", *args, fragments=(needle,), timeout=120)


# ---- checkpoints --------------------------------------------------------------------------------

def test_checkpoints_name_their_script_and_model_and_are_checked(tmp_path):
  from common.files import save_checkpoint, load_checkpoint
  Tensor.manual_seed(5)
  w = {k: v.realize() for k, v in ec.cnn_init(8).items()}
  good = tmp_path / "cnn.safetensors"
  save_checkpoint(w, good, {"width": 8}, script=quantize.SCRIPT, model=quantize.MODEL)
  assert load_checkpoint(good)[1]["script"] == "edge-deploy/quantize.py"
  _, _, cfg = quantize.parse_args(["--quick", "--load", str(good), "--width", "8"])
  loaded = quantize.load_cnn(cfg)
  for k in w: np.testing.assert_array_equal(loaded[k].numpy(), w[k].numpy())
  with pytest.raises(common.UserError, match="give --width 8"):
    quantize.load_cnn(quantize.parse_args(["--quick", "--load", str(good)])[2])
  other = tmp_path / "other.safetensors"
  save_checkpoint(w, other, {"width": 8}, script="generative/generative_models.py", model="ae")
  with pytest.raises(common.UserError, match="written by generative"):
    quantize.load_cnn(quantize.parse_args(["--quick", "--load", str(other), "--width", "8"])[2])
  no_meta = tmp_path / "no_meta.safetensors"
  save_checkpoint(w, no_meta, script=quantize.SCRIPT, model=quantize.MODEL)
  with pytest.raises(common.UserError, match="lacks 'width'"):
    quantize.load_cnn(quantize.parse_args(["--quick", "--load", str(no_meta), "--width", "8"])[2])
  garbage = tmp_path / "garbage.safetensors"
  garbage.write_bytes(b"not a checkpoint")
  with pytest.raises(common.UserError, match="safetensors"):
    quantize.load_cnn(quantize.parse_args(["--quick", "--load", str(garbage)])[2])


def test_a_missing_checkpoint_is_refused_before_training(tmp_path):
  bad_input(script("edge_optimize.py"), "--quantize", "--quick", "--out", str(tmp_path), "--load", str(tmp_path / "none.safetensors"),
            fragments=("no such file",), timeout=120)
  assert not (tmp_path / "cnn_loss.png").exists()


# ---- the split: one script per lever, no hidden flags -------------------------------------------

def test_every_edge_script_is_a_short_tutorial_without_a_hidden_worker_flag():
  for path in EDGE.glob("*.py"):
    text = path.read_text()
    assert len(text.splitlines()) <= 420, path.name
    assert "--worker" not in text and "SUPPRESS" not in text, path.name
    if path.name not in ("edge_common.py", "torch_reference.py"): assert "# --- plumbing" in text, path.name


# ---- end to end -------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_demo_passes_its_checks(tmp_path):
  r = run_py(script("edge_optimize.py"), "--quantize", "--memory", "--llm", "--matvec-fix", "0", "--quick", "--steps", "120", "--out", str(tmp_path),
             "--save", str(tmp_path / "cnn.safetensors"), "--json", str(tmp_path / "bench.json"), timeout=600)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "FAIL" not in r.stdout and r.stdout.count("PASS") >= 6
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["cnn"]["steps"] == 120                   # --quick's 150 steps do not override the typed --steps
  assert s["quantize"]["fp32"]["accuracy"] >= 0.8
  assert s["quantize"]["int8"]["weight_bytes"] < 0.3 * s["quantize"]["fp32"]["weight_bytes"]
  assert all(abs(v["planned"] - v["measured"]) / v["measured"] < 0.1 for v in s["memory"]["validation"])
  assert set(s["llm"]) == {"0"} and s["llm"]["0"]["runs"]["fp16"]["kernels_per_token"] > 0      # decoded here: MATVEC_FIX unset is 0
  cases = {x["case"] for x in validate(json.loads((tmp_path / "bench.json").read_text()))}
  assert {"cnn fp32 b=64", "llm decode fp16 (MATVEC_FIX=0)"} <= cases
  assert (tmp_path / "cnn_loss.png").stat().st_size > 0
  from common.files import load_checkpoint
  assert load_checkpoint(tmp_path / "cnn.safetensors", script=quantize.SCRIPT, model=quantize.MODEL)[1]["steps"] == 120


@pytest.mark.slow
def test_bench_json_validates(tmp_path):
  dest = tmp_path / "bench.json"
  r = run_py(script("edge_optimize.py"), "--bench", "--quick", "--json", str(dest), "--out", str(tmp_path))
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads(dest.read_text()))
  cases = {x["case"] for x in records}
  assert {"cnn fp32 b=64", "cnn int8 b=64", "llm decode fp16", "llm decode int8"} <= cases
  assert any(x["unit"] == "GFLOP/s" for x in records) and any(x["unit"] == "GB/s" for x in records)


@pytest.mark.slow
def test_memory_plan_runs_alone(tmp_path):
  r = run_py(script("memory_plan.py"), "--quick", "--out", str(tmp_path), timeout=300)
  assert r.returncode == 0 and "PASS: planner vs measured" in r.stdout, r.stderr[-2000:]
  assert len(json.loads((tmp_path / "summary.json").read_text())["memory"]["validation"]) == 5


@pytest.mark.slow
def test_quantize_runs_alone_and_distills(tmp_path):
  # --quick's data sizes are the demo's (test_quick_demo_passes_its_checks, before this in the suite): its CNN's kernels are
  # this teacher's, found in the program cache
  r = run_py(script("quantize.py"), "--distill", "--quick", "--steps", "60", "--out", str(tmp_path), "--json", str(tmp_path / "q.json"), timeout=600)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  s = json.loads((tmp_path / "summary.json").read_text())
  assert "quantize" not in s and s["distill"]["steps"] == 60 and s["distill"]["seeds"] == 2
  assert (tmp_path / "distillation.png").stat().st_size > 0
  assert {"teacher fp32 b=64", "student fp32 b=64"} <= {x["case"] for x in validate(json.loads((tmp_path / "q.json").read_text()))}


@pytest.mark.slow
def test_llm_runs_another_matvec_setting_in_a_plain_subprocess(tmp_path):
  """MATVEC_FIX=1 is not this process's setting: llm.py runs `llm.py --matvec-fix 1` with MATVEC_FIX=1 (no hidden flag)."""
  r = run_py(script("llm.py"), "--quick", "--matvec-fix", "1", "--llm-tokens", "8", "--out", str(tmp_path), "--json", str(tmp_path / "l.json"))
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert "fresh process with MATVEC_FIX=1" in r.stdout
  child = json.loads((tmp_path / "llm_matvec_fix1" / "summary.json").read_text())["llm"]["1"]
  assert child["matvec_fix"] == "on" and json.loads((tmp_path / "summary.json").read_text())["llm"]["1"] == child
  records = validate(json.loads((tmp_path / "l.json").read_text()))
  assert {x["case"] for x in records} == {"stream y=x+1 64 MiB (MATVEC_FIX=1)", "llm decode fp16 (MATVEC_FIX=1)", "llm decode int8 (MATVEC_FIX=1)"}


@pytest.mark.slow
def test_beam_mode_times_each_level_in_its_own_process(tmp_path):
  r = run_py(script("fusion_beam.py"), "--beam", "--quick", "--beams", "0", "--out", str(tmp_path), "--json", str(tmp_path / "beam.json"),
             env={"JITBEAM": "2"})        # the child drops JITBEAM, so it cannot override the level asked for
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads((tmp_path / "beam.json").read_text()))
  assert len(records) == 4 and all(x["beam"] == 0 and x["jitbeam"] == 0 and x["case"].endswith("BEAM=0") for x in records)
  assert "| matmul 128x128 fp16 |" in r.stdout and "PASS: BEAM levels x kernels timed" in r.stdout


def test_torch_reference_runs_the_same_workload(tmp_path):
  pytest.importorskip("torch")
  dest = tmp_path / "torch.json"
  r = run_py(script("torch_reference.py"), "--quick", "--json", str(dest), timeout=240)
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads(dest.read_text()))
  assert {x["case"] for x in records} >= {"matmul 128 fp16", "llm decode fp16"} and records[0]["device"].startswith("torch:")
