"""Tests for style-transfer/style_transfer.py on tinygrad's CPU device.

The math against numpy (Gram matrix, losses, the VGG-19 conv1_1 layer), gradients against finite
differences, the torchvision weight loader on generated checkpoints (.pth written in PyTorch's zip
format without torch, and .safetensors), L-BFGS on a quadratic and on Rosenbrock, image loading of odd
sizes and modes, a --quick end-to-end run, a --bench --quick --json run, and the bad inputs.
"""
import collections, importlib.util, json, os, pickle, subprocess, sys, types, zipfile
from pathlib import Path

os.environ.setdefault("DEV", "CPU")
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "style-transfer" / "style_transfer.py"
sys.path.insert(0, str(ROOT))


def _load_module():
  spec = importlib.util.spec_from_file_location("style_transfer", SCRIPT)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


st = _load_module()
from tinygrad import Tensor, TinyJit, dtypes  # noqa: E402
from tinygrad.helpers import Context  # noqa: E402
from tinygrad.nn.state import safe_save  # noqa: E402
from common import UserError  # noqa: E402
from common.bench import validate  # noqa: E402


def run_script(*args, timeout=240):
  env = {**os.environ, "DEV": "CPU"}
  return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(proc, *needles):
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert "Traceback" not in proc.stderr
  for n in needles: assert n in lines[0], lines[0]

# ---- the math against numpy ------------------------------------------------------------------

def np_gram(f):
  _, c, h, w = f.shape
  flat = f.reshape(c, h * w).astype(np.float64)
  return flat @ flat.T / (c * h * w)


def test_gram_and_losses_match_numpy():
  rng = np.random.default_rng(0)
  f, t = rng.standard_normal((1, 6, 5, 7)).astype(np.float32), rng.standard_normal((1, 6, 5, 7)).astype(np.float32)
  np.testing.assert_allclose(st.gram(Tensor(f)).numpy(), np_gram(f), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(st.content_loss(Tensor(f), Tensor(t)).numpy(), ((f - t) ** 2).mean(), rtol=1e-5)
  feats = {"a": rng.standard_normal((1, 4, 6, 6)).astype(np.float32), "b": rng.standard_normal((1, 8, 3, 3)).astype(np.float32)}
  targets = {"a": rng.standard_normal((4, 4)).astype(np.float32), "b": rng.standard_normal((8, 8)).astype(np.float32)}
  weights = {"a": 0.3, "b": 2.0}
  want = sum(weights[n] * ((np_gram(feats[n]) - targets[n]) ** 2).mean() for n in feats)
  got = st.style_loss({n: Tensor(v) for n, v in feats.items()}, {n: Tensor(v) for n, v in targets.items()}, weights).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5)
  x = rng.random((1, 3, 9, 11)).astype(np.float32)
  want_tv = (np.diff(x, axis=2) ** 2).mean() + (np.diff(x, axis=3) ** 2).mean()
  np.testing.assert_allclose(st.tv_loss(Tensor(x)).numpy(), want_tv, rtol=1e-5)


def test_gram_fp16_features_accumulate_in_fp32():
  f = np.random.default_rng(1).standard_normal((1, 4, 16, 16)).astype(np.float32) * 30
  g = st.gram(Tensor(f).cast(dtypes.float16))
  assert g.dtype == dtypes.float32
  np.testing.assert_allclose(g.numpy(), np_gram(f.astype(np.float16).astype(np.float32)), rtol=2e-3)


def np_conv_same(x, w):
  """(N, Cin, H, W), (Cout, Cin, k, k) -> (N, Cout, H, W): correlation with zero padding k//2, as conv2d."""
  (_, _, h, wd), k = x.shape, w.shape[-1]
  xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
  return sum(np.einsum("oc,nchw->nohw", w[:, :, dy, dx], xp[:, :, dy:dy + h, dx:dx + wd]) for dy in range(k) for dx in range(k))


def np_conv3x3_relu(x, w, b):
  """(1, Cin, H, W), (Cout, Cin, 3, 3) -> (1, Cout, H, W), zero padding 1, then ReLU."""
  return np.maximum(np_conv_same(x, w) + b[None, :, None, None], 0)


def test_vgg19_layout_matches_torchvision_and_conv1_1_matches_numpy():
  layout = st.vgg19_layout()
  assert [i for _, i, _, _ in layout] == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
  names = {n: i for n, i, _, _ in layout}
  assert names["conv1_1"] == 0 and names["conv4_2"] == 21 and names["conv5_1"] == 28
  Tensor.manual_seed(0)
  net = st.VGG19Features("avg")
  x = np.random.default_rng(2).random((1, 3, 16, 20)).astype(np.float32)
  feats = net(Tensor(x))
  assert feats["conv1_1"].shape == (1, 64, 16, 20) and feats["conv4_2"].shape == (1, 512, 2, 2)
  assert feats["conv5_1"].shape == (1, 512, 1, 1)
  xn = (x - np.array(st.IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)) / np.array(st.IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
  want = np_conv3x3_relu(xn, net.state["features.0.weight"].numpy(), net.state["features.0.bias"].numpy())
  np.testing.assert_allclose(feats["conv1_1"].numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,c,o,h,w,k", [(1, 3, 8, 9, 7, 3), (2, 4, 5, 6, 6, 5)])
def test_im2col_conv_and_its_input_gradient_match_numpy(n, c, o, h, w, k):
  """conv2d_im2col is a same-padding convolution; its input gradient (all style transfer uses) is the
  full correlation of dL/dy with the flipped kernel, computed here in numpy."""
  rng = np.random.default_rng(3)
  x, wt, b, g = (rng.standard_normal(s).astype(np.float32) for s in ((n, c, h, w), (o, c, k, k), (o,), (n, o, h, w)))
  xt = Tensor(x)
  y = st.conv2d_im2col(xt, Tensor(wt), Tensor(b))
  dx, = (y * Tensor(g)).sum().gradient(xt)
  want_y = np_conv_same(x, wt) + b[None, :, None, None]
  # dL/dx is the correlation of dL/dy with the kernel flipped in space and transposed in channels
  want_dx = np_conv_same(g, wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
  np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dx.numpy(), want_dx, rtol=1e-4, atol=1e-4)


def test_vgg_conv_modes_give_the_same_features_and_gradient():
  Tensor.manual_seed(0)
  a = st.VGG19Features("avg", conv="im2col")
  d = st.VGG19Features("avg", state=a.state, conv="direct")
  x = Tensor(np.random.default_rng(4).random((1, 3, 16, 16)).astype(np.float32))
  fa, fd = a(x), d(x)
  for name in ("conv1_1", "conv3_1", "conv4_2"):
    np.testing.assert_allclose(fa[name].numpy(), fd[name].numpy(), rtol=1e-3, atol=1e-4)
  ga, = fa["conv3_1"].square().sum().gradient(x)
  gd, = fd["conv3_1"].square().sum().gradient(x)
  np.testing.assert_allclose(ga.numpy(), gd.numpy(), rtol=1e-3, atol=1e-3 * np.abs(gd.numpy()).max())


def test_blur_downsample_matches_numpy():
  x = np.random.default_rng(3).random((1, 2, 9, 8)).astype(np.float32)
  taps = np.array([1, 4, 6, 4, 1]) / 16
  xp = np.pad(x[0], ((0, 0), (2, 2), (2, 2)), mode="edge")
  blurred = sum(taps[i] * taps[j] * xp[:, i:i + 9, j:j + 8] for i in range(5) for j in range(5))
  np.testing.assert_allclose(st.blur_downsample(Tensor(x)).numpy()[0], blurred[:, ::2, ::2], rtol=1e-5, atol=1e-6)

# ---- gradients against finite differences ------------------------------------------------------

def test_loss_gradients_match_finite_differences():
  Tensor.manual_seed(1)
  rng = np.random.default_rng(4)
  net = st.RandomFeatures(filters=6, kernel=3)
  content, style = Tensor(rng.random((1, 3, 16, 16)).astype(np.float32)), Tensor(rng.random((1, 3, 16, 16)).astype(np.float32))
  prob = st.StyleProblem(net, content, style, content, (1.0, 50.0, 0.5), {n: 1.0 for n in net.style_layers}, "adam", 0.01)
  x0 = rng.random((1, 3, 16, 16))
  losses_at = TinyJit(lambda x: prob.losses(x).realize())   # the finite differences replay one compiled graph
  for which in (0, 2):   # total (content + style + tv) and style alone, the Gram path (each is one more compile)
    x = Tensor(x0.astype(np.float32))
    grad = prob.losses(x)[which].gradient(x)[0].numpy().astype(np.float64)
    # directional derivative along a random unit direction: (L(x+εv) − L(x−εv)) / 2ε ≈ ∇L·v
    v = rng.standard_normal(x0.shape)
    v, eps = v / np.linalg.norm(v), 1e-2       # a short step crosses few ReLU kinks
    lp = losses_at(Tensor((x0 + eps * v).astype(np.float32)).realize()).numpy()[which]
    lm = losses_at(Tensor((x0 - eps * v).astype(np.float32)).realize()).numpy()[which]
    fd, analytic = (lp - lm) / (2 * eps), float((grad * v).sum())
    assert abs(fd - analytic) <= 1e-2 * abs(analytic) + 1e-5, (which, fd, analytic)


# ---- VGG-19 weights: generated torchvision-layout checkpoints -------------------------------------

def vgg19_state(rng, bad: dict | None = None) -> dict[str, np.ndarray]:
  shapes = dict(st.VGG19Features.expected_shapes())
  shapes.update(bad or {})
  return {k: (rng.standard_normal(s) * 0.01).astype(np.float32) for k, s in shapes.items() if s is not None}


def write_torch_pth(state: dict[str, np.ndarray], path: Path):
  """Write a state dict the way torch.save does (zip: archive/data.pkl + one raw storage per tensor),
  without torch: the pickle names torch._utils._rebuild_tensor_v2 and torch.FloatStorage through
  stand-in modules that exist only while pickling."""
  torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")
  def _rebuild_tensor_v2(*args): raise RuntimeError("stand-in")
  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
  FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
  utils_mod._rebuild_tensor_v2, torch_mod.FloatStorage, torch_mod._utils = _rebuild_tensor_v2, FloatStorage, utils_mod

  class Storage:
    def __init__(self, key, n): self.key, self.n = key, n

  class FakeTensor:
    def __init__(self, key, arr): self.key, self.arr = key, arr
    def __reduce__(self):
      strides = tuple(s // 4 for s in self.arr.strides)
      return (_rebuild_tensor_v2, (Storage(self.key, self.arr.size), 0, self.arr.shape, strides, False, collections.OrderedDict()))

  class TorchPickler(pickle._Pickler):
    def persistent_id(self, obj):
      return ("storage", FloatStorage, obj.key, "cpu", obj.n) if isinstance(obj, Storage) else None

  saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
  sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
  try:
    import io
    buf = io.BytesIO()
    tensors = collections.OrderedDict((k, FakeTensor(str(i), np.ascontiguousarray(v))) for i, (k, v) in enumerate(state.items()))
    TorchPickler(buf, protocol=2).dump(tensors)
  finally:
    for k, v in saved.items():
      if v is None: sys.modules.pop(k, None)
      else: sys.modules[k] = v
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", buf.getvalue())
    for t in tensors.values(): z.writestr(f"archive/data/{t.key}", t.arr.tobytes())
    z.writestr("archive/version", "3\n")


@pytest.fixture(scope="module")
def good_state():
  return vgg19_state(np.random.default_rng(5))


def test_loader_reads_pth_with_classifier_keys(tmp_path, good_state):
  extra = {"classifier.6.bias": np.zeros(10, np.float32)}   # the full model's head is ignored
  write_torch_pth({**good_state, **extra}, tmp_path / "vgg19.pth")
  loaded = st.load_vgg19_weights(str(tmp_path / "vgg19.pth"))
  assert set(loaded) == set(good_state)
  for k in ("features.0.weight", "features.21.bias", "features.34.weight"):
    np.testing.assert_array_equal(loaded[k].numpy(), good_state[k])


def test_loader_reads_safetensors_and_bare_features_keys(tmp_path, good_state):
  safe_save({k: Tensor(v) for k, v in good_state.items()}, str(tmp_path / "vgg19.safetensors"))
  loaded = st.load_vgg19_weights(str(tmp_path / "vgg19.safetensors"))
  np.testing.assert_array_equal(loaded["features.28.weight"].numpy(), good_state["features.28.weight"])
  bare = {k[len("features."):]: v for k, v in good_state.items() if k.startswith("features.3")}  # a few only
  safe_save({k: Tensor(v) for k, v in bare.items()}, str(tmp_path / "part.safetensors"))
  with pytest.raises(UserError, match="missing key 'features.0.weight'"):
    st.load_vgg19_weights(str(tmp_path / "part.safetensors"))


def test_loaded_weights_drive_the_network(tmp_path, good_state):
  write_torch_pth(good_state, tmp_path / "vgg19.pth")
  net = st.VGG19Features("max", st.load_vgg19_weights(str(tmp_path / "vgg19.pth")))
  x = np.random.default_rng(6).random((1, 3, 16, 16)).astype(np.float32)
  xn = (x - np.array(st.IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)) / np.array(st.IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
  want = np_conv3x3_relu(xn, good_state["features.0.weight"], good_state["features.0.bias"])
  np.testing.assert_allclose(net(Tensor(x))["conv1_1"].numpy(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad, needle", [
  ({"features.21.weight": (512, 512, 5, 5)}, "'features.21.weight' has shape (512, 512, 5, 5), expected (512, 512, 3, 3)"),
  ({"features.34.bias": None}, "missing key 'features.34.bias'"),
  ({"features.3.weight": (64, 64, 3, 3)}, "unexpected key 'features.3.weight'"),
])
def test_loader_rejects_wrong_state_dicts(tmp_path, bad, needle):
  state = vgg19_state(np.random.default_rng(7), bad)
  small = {k: v for k, v in state.items()}
  write_torch_pth(small, tmp_path / "bad.pth")
  with pytest.raises(UserError) as e:
    st.load_vgg19_weights(str(tmp_path / "bad.pth"))
  assert needle in str(e.value)

# ---- L-BFGS ----------------------------------------------------------------------------------------

def lbfgs_minimize(f, x0, steps, lr=1.0):
  x = Tensor(np.asarray(x0, np.float32)).contiguous().realize()
  opt = st.LBFGS([x], lr=lr, history=10)

  @TinyJit
  def step():
    loss = f(x)
    x.grad, = loss.gradient(x)
    with Context(TRAINING=1): opt.step()
    return loss.realize()
  for _ in range(steps): step()
  return x.numpy(), float(f(x).numpy())


def test_lbfgs_minimizes_a_quadratic():
  rng = np.random.default_rng(8)
  q = rng.standard_normal((12, 12))
  A = (q @ q.T + 12 * np.eye(12)).astype(np.float32)   # SPD, condition number ~ 4
  b = rng.standard_normal(12).astype(np.float32)
  At, bt = Tensor(A), Tensor(b)
  x, _ = lbfgs_minimize(lambda x: 0.5 * (x * (At @ x)).sum() - (bt * x).sum(), np.zeros(12), steps=30)
  np.testing.assert_allclose(x, np.linalg.solve(A.astype(np.float64), b), atol=1e-4)


def test_lbfgs_minimizes_rosenbrock():
  rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
  x, fx = lbfgs_minimize(rosen, [-1.2, 1.0], steps=150)
  assert fx < 1e-6, (x, fx)
  np.testing.assert_allclose(x, [1.0, 1.0], atol=2e-3)

# ---- images -------------------------------------------------------------------------------------

def test_image_loading_odd_sizes_and_modes(tmp_path):
  from PIL import Image
  gray = tmp_path / "gray.png"; Image.fromarray(np.arange(37 * 23, dtype=np.uint8).reshape(23, 37)).save(gray)
  rgba = tmp_path / "clear.png"; Image.new("RGBA", (19, 41), (255, 0, 0, 0)).save(rgba)
  pal = tmp_path / "pal.gif"; Image.new("P", (50, 30), 3).save(pal)
  cmyk = tmp_path / "cmyk.jpg"; Image.new("CMYK", (33, 33), (0, 255, 0, 0)).save(cmyk)
  g = st.load_image(str(gray), 74, "content", st.demo_content)
  assert g.shape == (46, 74, 3) and g.dtype == np.float32 and np.allclose(g[..., 0], g[..., 2])
  r = st.load_image(str(rgba), 82, "style", st.demo_style)
  assert r.shape == (82, 38, 3) and r.min() > 0.99            # fully transparent -> white
  assert st.load_image(str(pal), 100, "style", st.demo_style).shape == (60, 100, 3)
  assert st.load_image(str(cmyk), 40, "style", st.demo_style).shape == (40, 40, 3)
  demo = st.load_image(None, 64, "content", st.demo_content)
  assert demo.shape == (48, 64, 3) and 0 <= demo.min() and demo.max() <= 1
  with pytest.raises(UserError, match="short edge"):
    st.fit_long_edge(10, 300, 256, "thin")

# ---- end to end ---------------------------------------------------------------------------------

def test_quick_run_passes_its_check(tmp_path):
  proc = run_script("--quick", "--out", str(tmp_path), "--save", str(tmp_path / "img.safetensors"))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "PASS: style loss" in proc.stdout and "PASS: content loss" in proc.stdout
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["passed"] and summary["style_ratio"] <= 0.05 and summary["content_ratio"] <= st.CONTENT_BOUND
  assert summary["log"][-1]["style"] < summary["log"][0]["style"]
  for name in ("result.png", "panel.png", "losses.png", "img.safetensors"): assert (tmp_path / name).is_file()
  # the checkpoint belongs to a 48 px run: loading it into a different size is a one-line error
  assert_one_line_error(run_script("--quick", "--size", "40", "--out", str(tmp_path / "b"), "--load", str(tmp_path / "img.safetensors")),
                        "checkpoint", "48x36")


def test_bench_quick_json_validates(tmp_path):
  proc = run_script("--bench", "--quick", "--bench-nets", "random", "--json", str(tmp_path / "b.json"))
  assert proc.returncode == 0, proc.stdout + proc.stderr
  records = validate(json.loads((tmp_path / "b.json").read_text()))
  cases = {r["case"] for r in records}
  assert {"random 64px fp32 forward", "random 64px fp32 adam step", "random 64px fp32 lbfgs step"} <= cases
  assert all(r["device_mem_MB"] > 0 for r in records if r["case"].endswith("step"))


def run_in_process(monkeypatch, capsys, *args):
  monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
  capsys.readouterr()
  try: code = st.common.run_main(st.main)
  except SystemExit as e: code = e.code
  return code, capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch, capsys):
  not_image = tmp_path / "notes.png"; not_image.write_text("not an image")
  weights_txt = tmp_path / "w.txt"; weights_txt.write_text("x")
  fake_pth = tmp_path / "w.pth"; fake_pth.write_bytes(b"garbage")
  cases = [
    (["--content", str(tmp_path / "missing.jpg")], "no such file"),
    (["--style", str(not_image)], "cannot be read as an image"),
    (["--weights", str(weights_txt)], "expected a .pth"),
    (["--weights", str(fake_pth)], "cannot be read as a PyTorch checkpoint"),
    (["--size", "0"], "--size"),
    (["--kernel", "4"], "must be odd"),
    (["--size", "64", "--scales", "3"], "coarsest scale"),
    (["--layer-weights", "1,2"], "5 values"),
    (["--weights", str(fake_pth), "--net", "random"], "--weights is for --net vgg19"),
    (["--json", str(tmp_path / "x.json")], "--json goes with --bench"),
  ]
  for args, needle in cases:   # in-process (each fails before any kernel is compiled): seconds, not minutes
    code, err = run_in_process(monkeypatch, capsys, *args, "--out", str(tmp_path / "o"))
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and needle in lines[0], (args, err)
  assert not (tmp_path / "o" / "result.png").exists()
  # and once as users run it, as a file in a fresh process
  assert_one_line_error(run_script("--content", str(not_image), "--out", str(tmp_path / "o")), "cannot be read as an image")


def test_torch_reference_without_torch_is_one_line_error():
  if importlib.util.find_spec("torch") is not None: pytest.skip("torch is installed: the reference would run, not fail")
  env = {**os.environ, "DEV": "CPU"}
  proc = subprocess.run([sys.executable, str(ROOT / "style-transfer" / "torch_reference.py"), "--quick"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120, env=env)
  assert_one_line_error(proc, "PyTorch is not installed")


def test_real_torch_checkpoints_round_trip(tmp_path, good_state):
  """With torch installed (a test-only extra): a file torch.save wrote loads here, and the file our
  torch-free writer produced is one torch.load accepts."""
  torch = pytest.importorskip("torch")
  torch.save({k: torch.from_numpy(v) for k, v in good_state.items()}, tmp_path / "real.pth")
  loaded = st.load_vgg19_weights(str(tmp_path / "real.pth"))
  np.testing.assert_array_equal(loaded["features.25.weight"].numpy(), good_state["features.25.weight"])
  write_torch_pth({k: good_state[k] for k in ("features.0.weight", "features.0.bias")}, tmp_path / "ours.pth")
  back = torch.load(tmp_path / "ours.pth", weights_only=True)
  np.testing.assert_array_equal(back["features.0.weight"].numpy(), good_state["features.0.weight"])
