"""Tests for style-transfer/style_transfer.py on tinygrad's CPU device.

The math against independent references: Gram matrix, losses, the blur pyramid, VGG-19's conv1_1 and the
im2col convolution with its input gradient against numpy; loss gradients against finite differences;
L-BFGS on a quadratic (numpy.linalg.solve) and on Rosenbrock; the torchvision weight loader on generated
checkpoints (.pth in PyTorch's zip format, written without torch, and .safetensors). Then the rules for
input and output, one test per defect class: images of every mode and bit depth, a decompression bomb,
a missing device, outputs checked before the work, --save/--json in every mode, finite flags, --quick
that changes defaults only, impossible flag combinations, a success check that a do-nothing or
copy-the-style result fails, and the documented commands (in-process with --quick, so the compiled
step is shared between the end-to-end tests).
"""
import collections, importlib.util, json, os, pickle, sys, types, zipfile
from pathlib import Path

os.environ.setdefault("DEV", "CPU")
import numpy as np
import pytest
from conftest import ROOT, bad_input, png_claiming

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
from common.cli import choice_list, int_range  # noqa: E402

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


def imagenet_normalized(x):
  return (x - np.array(st.IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)) / np.array(st.IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)


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
  want = np_conv3x3_relu(imagenet_normalized(x), net.state["features.0.weight"].numpy(), net.state["features.0.bias"].numpy())
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
  """The two ways of writing VGG's convolutions agree through a pooling layer (conv2_1), features and
  input gradient (the im2col convolution itself is checked against numpy above)."""
  Tensor.manual_seed(0)
  a = st.VGG19Features("avg", conv="im2col")
  d = st.VGG19Features("avg", state=a.state, conv="direct")
  x = Tensor(np.random.default_rng(4).random((1, 3, 16, 16)).astype(np.float32))
  fa, fd = a(x)["conv2_1"], d(x)["conv2_1"]
  # gradients before realizing the features: common.conv's gemm form stores its patch matrix (a .contiguous()),
  # and tinygrad 0.14 cuts ∂L/∂x at a stored tensor once it is realized
  ga, = fa.square().sum().gradient(x)
  gd, = fd.square().sum().gradient(x)
  np.testing.assert_allclose(fa.numpy(), fd.numpy(), rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(ga.numpy(), gd.numpy(), rtol=1e-3, atol=1e-3 * np.abs(gd.numpy()).max())


def test_blur_downsample_matches_numpy():
  x = np.random.default_rng(3).random((1, 2, 9, 8)).astype(np.float32)
  taps = np.array([1, 4, 6, 4, 1]) / 16
  xp = np.pad(x[0], ((0, 0), (2, 2), (2, 2)), mode="edge")
  blurred = sum(taps[i] * taps[j] * xp[:, i:i + 9, j:j + 8] for i in range(5) for j in range(5))
  np.testing.assert_allclose(st.blur_downsample(Tensor(x)).numpy()[0], blurred[:, ::2, ::2], rtol=1e-5, atol=1e-6)

# ---- gradients against finite differences ------------------------------------------------------

def test_loss_gradients_match_finite_differences():
  """The gradient of the total loss (content + style + tv through the random network) along a random
  direction against a central difference; one gradient graph, since each costs a compile."""
  Tensor.manual_seed(1)
  rng = np.random.default_rng(4)
  net = st.RandomFeatures(filters=6, kernel=3)
  content, style = Tensor(rng.random((1, 3, 16, 16)).astype(np.float32)), Tensor(rng.random((1, 3, 16, 16)).astype(np.float32))
  prob = st.StyleProblem(net, content, style, content, (1.0, 50.0, 0.5), {n: 1.0 for n in net.style_layers}, "adam", 0.01)
  x0 = rng.random((1, 3, 16, 16))
  losses_at = TinyJit(lambda x: prob.losses(x).realize())   # the finite differences replay one compiled graph
  x = Tensor(x0.astype(np.float32))
  grad = prob.losses(x)[0].gradient(x)[0].numpy().astype(np.float64)
  # directional derivative along a random unit direction: (L(x+εv) − L(x−εv)) / 2ε ≈ ∇L·v
  v = rng.standard_normal(x0.shape)
  v, eps = v / np.linalg.norm(v), 1e-2       # a short step crosses few ReLU kinks
  lp = losses_at(Tensor((x0 + eps * v).astype(np.float32)).realize()).numpy()[0]
  lm = losses_at(Tensor((x0 - eps * v).astype(np.float32)).realize()).numpy()[0]
  fd, analytic = (lp - lm) / (2 * eps), float((grad * v).sum())
  assert abs(fd - analytic) <= 1e-2 * abs(analytic), (fd, analytic)


def test_style_loss_gradient_matches_the_closed_form():
  """∂/∂F of w·mean((G − T)²) with G = F Fᵀ/N (F: C × HW, N = C·H·W) is (2w/C²)·(D + Dᵀ)·F/N, D = G − T:
  the Gram path's gradient exactly, without the finite-difference noise of ReLU kinks."""
  rng = np.random.default_rng(9)
  f, target = rng.standard_normal((1, 5, 4, 6)).astype(np.float32), rng.standard_normal((5, 5)).astype(np.float32)
  ft = Tensor(f)
  grad, = st.style_loss({"a": ft}, {"a": Tensor(target)}, {"a": 0.7}).gradient(ft)
  F, n = f.reshape(5, 24).astype(np.float64), 5 * 4 * 6
  D = F @ F.T / n - target
  np.testing.assert_allclose(grad.numpy().reshape(5, 24), 0.7 * 2 / 25 * (D + D.T) @ F / n, rtol=1e-4, atol=1e-7)

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
  write_torch_pth(state, tmp_path / "bad.pth")
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
  def rosenbrock(x): return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
  x, fx = lbfgs_minimize(rosenbrock, [-1.2, 1.0], steps=150)
  assert fx < 1e-6, (x, fx)
  np.testing.assert_allclose(x, [1.0, 1.0], atol=2e-3)

# ---- images: every mode and bit depth, bombs ------------------------------------------------------

def test_image_loading_odd_sizes_and_modes(tmp_path):
  from PIL import Image
  Image.fromarray(np.arange(37 * 23, dtype=np.uint8).reshape(23, 37)).save(tmp_path / "gray.png")
  Image.new("RGBA", (19, 41), (255, 0, 0, 0)).save(tmp_path / "clear.png")
  Image.new("P", (50, 30), 3).save(tmp_path / "pal.gif")
  Image.new("CMYK", (33, 33), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
  g = st.load_image(str(tmp_path / "gray.png"), 74, "content", st.demo_content)
  assert g.shape == (46, 74, 3) and g.dtype == np.float32 and np.allclose(g[..., 0], g[..., 2])
  r = st.load_image(str(tmp_path / "clear.png"), 82, "style", st.demo_style)
  assert r.shape == (82, 38, 3) and r.min() > 0.99            # fully transparent -> white
  assert st.load_image(str(tmp_path / "pal.gif"), 100, "style", st.demo_style).shape == (60, 100, 3)
  assert st.load_image(str(tmp_path / "cmyk.jpg"), 40, "style", st.demo_style).shape == (40, 40, 3)
  assert st.load_image(None, 64, "content", st.demo_content).shape == (48, 64, 3)
  with pytest.raises(UserError, match="short edge"): st.fit_long_edge(10, 300, 256, "thin")


def test_16_bit_greyscale_png_is_scaled_by_its_range(tmp_path):
  """A 16-bit PNG (mode I;16, as depth cameras write them) was read as nearly all white."""
  from PIL import Image
  ramp = (np.linspace(0.1, 0.6, 30 * 40).reshape(30, 40) * 65535).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / "deep.png")
  img = st.load_image(str(tmp_path / "deep.png"), 40, "content image", st.demo_content)
  assert img.shape == (30, 40, 3)
  np.testing.assert_allclose(img[..., 1], ramp / 65535, atol=1e-4)
  smaller = st.load_image(str(tmp_path / "deep.png"), 32, "content image", st.demo_content)   # resized in float, not through 8 bits
  assert smaller.shape == (24, 32, 3) and 0.1 < smaller.mean() < 0.6 and len(np.unique(smaller)) > 256


# ---- running the script: in this process (shared kernels), or as a user does -------------------------

def run_here(*args: str) -> tuple[int, str, str]:
  """main() as `python3 style_transfer.py ARGS` runs it, but in this process: kernels one test compiled
  are reused by the next. -> (exit status, stdout, stderr)."""
  import contextlib, io
  saved, out, err = sys.argv, io.StringIO(), io.StringIO()
  sys.argv = [str(SCRIPT), *args]
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try: code = st.common.run_main(st.main)
      except SystemExit as e: code = e.code
  finally: sys.argv = saved
  return code, out.getvalue(), err.getvalue()


def assert_refused_before_work(result, *fragments):
  code, out, err = result
  lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, out[-300:], err[-1500:])
  for f in fragments: assert f in lines[0], (f, lines[0])
  assert "features on" not in out, out       # nothing was computed before the refusal


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Files for the bad-input sweep and the end-to-end runs."""
  from PIL import Image
  d = tmp_path_factory.mktemp("inputs")
  st.files.save_image(st.demo_content(64, 64), d / "photo.jpg")
  st.files.save_image(st.demo_style(64, 64), d / "painting.jpg")
  (d / "notes.png").write_text("not an image")
  (d / "empty.png").write_bytes(b"")
  Image.new("RGB", (400, 8)).save(d / "thin.png")
  (d / "cut.png").write_bytes((d / "photo.jpg").read_bytes()[:300])
  png_claiming(d / "bomb.png", 60000, 60000)
  (d / "w.txt").write_text("x")
  (d / "w.pth").write_bytes(b"garbage")
  (d / "notes.safetensors").write_text("not a checkpoint")
  safe_save({"features.0.weight": Tensor.zeros(64, 3, 3, 3)}, str(d / "vgg_part.safetensors"))
  st.files.save_checkpoint({"image": Tensor.zeros(1, 3, 36, 48)}, d / "image_48x36.safetensors", script=st.SCRIPT, model="image")
  (d / "folder").mkdir()
  (d / "file").write_text("x")
  (d / "out_with_folder" / "result.png").mkdir(parents=True)
  (d / "out_with_file").mkdir()
  (d / "out_with_file" / "snapshots").write_text("x")
  return d


BAD_INPUTS = [   # (arguments, with {d} for the inputs folder, and a fragment of the one-line error)
  # files that are missing, unreadable, of the wrong kind or shape
  ("--content {d}/missing.jpg", "no such file"), ("--content {d}/folder", "not a file"), ("--style {d}/notes.png", "cannot be read as an image"),
  ("--content {d}/empty.png", "cannot be read as an image"), ("--content {d}/cut.png", "cannot be read as an image"),
  ("--content {d}/thin.png", "short edge"), ("--content {d}/bomb.png", "60000x60000"),
  ("--weights {d}/w.txt", "expected a .pth"), ("--weights {d}/w.pth", "cannot be read as a PyTorch checkpoint"),
  ("--weights {d}/missing.pth", "no such file"), ("--weights {d}/vgg_part.safetensors", "missing key 'features.0.bias'"),
  ("--load {d}/notes.safetensors", "not a readable safetensors"), ("--load {d}/vgg_part.safetensors", "unknown script"),
  ("--quick --size 40 --load {d}/image_48x36.safetensors", "has shape (1, 3, 36, 48), expected (1, 3, 30, 40)"),
  # numbers: nan, inf, negative, zero, huge
  ("--lr nan", "not a finite number"), ("--lr inf", "not a finite number"), ("--lr 0", "must be > 0"), ("--style-scale inf", "finite"),
  ("--content-weight nan", "finite"), ("--tv-weight -1", "must be >= 0"), ("--layer-weights 1,1,nan,1,1", "finite"),
  ("--layer-weights 1,2", "needs 5 values"), ("--layer-weights 0,0,0,0,0", "all 0"), ("--seed -1", "must be >= 0"),
  ("--content-weight 0 --style-weight 0 --tv-weight 0", "nothing to optimize"), ("--size 0", "between 16 and 4096"),
  ("--size 100000", "between 16 and 4096"), ("--size 64 --scales 3", "coarsest scale"), ("--style-scale 100", "over 4096"),
  ("--style-scale 0.01", "short edge"), ("--kernel 4", "must be odd"), ("--kernel 99", "between 1 and 15"),
  ("--filters 0", "between 1 and 1024"), ("--filters 100000", "between 1 and 1024"), ("--steps 0", "must be > 0"), ("--steps -5", "must be > 0"),
  # flags that would be ignored or contradict each other
  ("--quick --snapshot-every 50", "no snapshot would be written"), ("--init noise --load {d}/image_48x36.safetensors", "--init and --load"),
  ("--weights {d}/w.pth --net random", "--weights is for --net vgg19"), ("--pool max", "--pool is for --net vgg19"),
  ("--net vgg19 --filters 8", "--filters is for --net random"), ("--optimizer sgd", "invalid choice"), ("--frobnicate", "unrecognized"),
  ("--bench --save {d}/x.safetensors", "--save does nothing with --bench"), ("--bench --load {d}/image_48x36.safetensors", "--load does nothing"),
  ("--bench --content {d}/photo.jpg", "--content does nothing"), ("--bench --steps 5", "--steps does nothing"),
  ("--bench-sizes 64", "--bench-sizes goes with --bench"), ("--bench --bench-sizes 8", "16 to 4096"), ("--bench --bench-nets foo", "choose from"),
  ("--bench --bench-cases adam,foo", "choose from"), ("--bench --bench-dtypes fp8", "choose from"),
  ("--bench --bench-nets random --weights {d}/w.pth", "add vgg19 to --bench-nets"), ("--bench --bench-nets random --pool max", "--pool is for"),
  # outputs that cannot be written: refused before the work
  ("--out /proc/style-out", "cannot be written"), ("--out {d}/file", "not a folder"), ("--out {d}/out_with_folder", "result.png: is a folder"),
  ("--out {d}/out_with_file --snapshot-every 5", "snapshots: exists and is not a folder"), ("--save /proc/x.safetensors", "cannot be written"),
  ("--save {d}/folder", "is a folder"), ("--json /dev/null", "not a regular file"), ("--save {d}/same --json {d}/same", "different paths"),
  ("--bench --json /sys/x.json", "cannot be written"),
]


@pytest.mark.parametrize("args, fragment", BAD_INPUTS, ids=[a for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_before_any_work(inputs, tmp_path, args, fragment):
  argv = args.format(d=inputs).split()
  if "--out" not in argv: argv += ["--out", str(tmp_path / "out")]
  assert_refused_before_work(run_here(*argv), fragment)
  assert not (tmp_path / "out" / "result.png").exists()


def test_bad_input_as_users_run_it(inputs):
  bad_input(str(SCRIPT), "--content", str(inputs / "notes.png"), "--out", str(inputs / "o"), fragments=("cannot be read as an image",))


@pytest.mark.parametrize("env, fragment", [({"DEV": "CUDA"}, "cannot open device CUDA"), ({"NV": "1"}, "NV requested")])
def test_missing_device_is_one_line(env, fragment, tmp_path):
  """DEV=CUDA without CUDA was a traceback; the documented `NV=1 ... --bench` on a machine without an
  NVIDIA GPU says so in one line."""
  bad_input(str(SCRIPT), "--quick", "--out", str(tmp_path), env=env, fragments=(fragment,))
  bad_input(str(SCRIPT), "--bench", env=env, fragments=(fragment,))


def test_quick_changes_defaults_only():
  p = st.make_parser()
  quick = p.parse_args(["--quick"])
  assert (quick.size, quick.steps, quick.bench_sizes, quick.bench_dtypes) == (48, 40, [64], ["fp32"])
  typed = p.parse_args(["--quick", "--size", "64", "--steps", "5"])
  st.check_flags(p, typed)
  cfg = st.config_from_args(typed)
  assert (typed.size, cfg.steps, cfg.net, cfg.style_weight, cfg.lr) == (64, 5, "random", 3e4, 0.02)
  assert p.parse_args(["--quick", "--bench", "--bench-sizes", "32", "--bench-dtypes", "fp16"]).bench_sizes == [32]


def test_common_int_range_and_choice_list():
  import argparse
  assert int_range(16, 4096)("64") == 64 and choice_list("a", "b")("b,a") == ["b", "a"]
  for parse, text in ((int_range(16, 4096), "8"), (int_range(1, 3), "x"), (choice_list("a", "b"), "a,c")):
    with pytest.raises(argparse.ArgumentTypeError): parse(text)


def test_success_check_fails_a_result_that_keeps_the_content_or_copies_the_style(capsys):
  Tensor.manual_seed(0)
  net = st.RandomFeatures(filters=8, kernel=3)
  content, style = st.demo_content(24, 32), st.demo_style(24, 32)
  prob = st.StyleProblem(net, st.to_tensor(content), st.to_tensor(style), st.to_tensor(content), st.DEFAULT_WEIGHTS["random"],
                         {n: 1.0 for n in net.style_layers}, "adam", 0.02)
  unchanged = st.success_check(st.StyleRun(problem=prob, initial=content, result=content), content, style)
  assert not unchanged["passed"] and unchanged["style_ratio"] == pytest.approx(1.0)
  copied = st.success_check(st.StyleRun(problem=prob, initial=content, result=style), content, style)
  assert not copied["passed"] and copied["content_ratio"] == pytest.approx(1.0)
  assert capsys.readouterr().out.count("FAIL") == 2

# ---- end to end: the documented commands (with --quick), --save/--load, --json in both modes -------------

@pytest.fixture(scope="module")
def quick_run(inputs, tmp_path_factory):
  """`python3 style-transfer/style_transfer.py --content photo.jpg --style painting.jpg` with --quick."""
  out = tmp_path_factory.mktemp("quick")
  with Context(NOOPT=1):        # as the tests in this process compile (conftest.py): a module fixture is set up outside them
    code, stdout, err = run_here("--content", str(inputs / "photo.jpg"), "--style", str(inputs / "painting.jpg"), "--quick", "--out",
                                 str(out), "--save", str(out / "image.safetensors"), "--json", str(out / "steps.json"))
  return code, stdout, err, out


@pytest.mark.slow
def test_documented_command_with_your_pictures_passes(quick_run):
  code, stdout, err, out = quick_run
  assert code == 0, stdout[-2000:] + err[-2000:]
  assert "random features on CPU: content 48x48, style 48x48, adam x 40 steps" in stdout
  assert "PASS: style loss" in stdout and "PASS: content loss" in stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["passed"] and summary["style_ratio"] <= st.STYLE_TARGET and summary["content_ratio"] <= st.CONTENT_BOUND
  assert summary["log"][-1]["style"] < 0.1 * summary["log"][0]["style"] and len(summary["log"]) == 40
  for name in ("result.png", "panel.png", "losses.png", "image.safetensors"): assert (out / name).is_file()


@pytest.mark.slow
def test_demo_json_writes_the_step_timings(quick_run):
  """--json was refused outside --bench: the demo now writes its steps' timings in the bench schema."""
  records = validate(json.loads((quick_run[3] / "steps.json").read_text()))
  assert [r["case"] for r in records] == ["random 48x48 adam step (demo)"]
  assert len(records[0]["warmup_ms"]) == 2 and len(records[0]["samples_ms"]) == 38 and records[0]["unit"] == "steps/s"


@pytest.mark.slow
def test_load_continues_from_the_saved_image_and_save_writes_again(quick_run, inputs, tmp_path):
  first = json.loads((quick_run[3] / "summary.json").read_text())
  saved = str(quick_run[3] / "image.safetensors")
  code, stdout, err = run_here("--content", str(inputs / "photo.jpg"), "--style", str(inputs / "painting.jpg"), "--quick", "--steps", "3",
                               "--load", saved, "--save", str(tmp_path / "next.safetensors"), "--out", str(tmp_path))
  assert code in (0, 1) and "Traceback" not in err, err[-2000:]
  again = json.loads((tmp_path / "summary.json").read_text())
  # the run started from the saved image: its initial losses are the first run's final ones
  assert again["start_losses"]["style"] == pytest.approx(first["final_losses"]["style"], rel=1e-4)
  assert (tmp_path / "next.safetensors").is_file() and "saved the image to" in stdout
  assert st.load_start_image(str(tmp_path / "next.safetensors"), (48, 48)).shape == (48, 48, 3)


@pytest.mark.slow
def test_bench_quick_json_validates(quick_run, tmp_path):
  """--bench --quick at the size of the run above (48 px), so its Adam step reuses that step's kernels."""
  code, stdout, err = run_here("--bench", "--quick", "--bench-nets", "random", "--bench-sizes", "48", "--bench-cases", "forward,adam",
                               "--json", str(tmp_path / "b.json"))
  assert code == 0, stdout[-2000:] + err[-2000:]
  records = validate(json.loads((tmp_path / "b.json").read_text()))
  assert {r["case"] for r in records} == {"random 48px fp32 forward", "random 48px fp32 adam step"}
  assert all(r["device_mem_MB"] > 0 for r in records if r["case"].endswith("step"))


def test_torch_reference_without_torch_is_one_line_error():
  if importlib.util.find_spec("torch") is not None: pytest.skip("torch is installed: the reference would run, not fail")
  bad_input(str(ROOT / "style-transfer" / "torch_reference.py"), "--quick", env={"DEV": "CPU"}, fragments=("PyTorch is not installed",))
  bad_input(str(ROOT / "style-transfer" / "torch_reference.py"), "--save", "x", fragments=("unrecognized arguments: --save",))


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
