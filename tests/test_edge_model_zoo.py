"""edge-deploy/model_zoo.py: the five classifiers against a float64 numpy forward written here from torchvision's
definitions, torchvision's state-dict layout (an independent key list for ResNet-18, the published parameter counts
for all five), loading and refusing state dicts, preprocessing, top-5, bench JSON, bad input."""
import json, sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, bad_input, run_py

sys.path.insert(0, str(ROOT / "edge-deploy"))
import common  # noqa: E402,F401  (settles DEV before tinygrad)
from tinygrad import Tensor  # noqa: E402
import zoo_models as zm  # noqa: E402
import model_zoo  # noqa: E402

SCRIPT = str(ROOT / "edge-deploy" / "model_zoo.py")


# ---- a float64 numpy reference, layer by layer ----------------------------------------------------

def np_conv(x, w, b=None, stride=1, pad=0, groups=1):
  """Direct convolution from sliding windows: y[b, o] = Σ_{c in o's group, i, j} w[o, c, i, j] · x_pad[b, c, s·y + i, s·x + j]."""
  n, c, h, wd = x.shape
  o, cg, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
  win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :ho, :wo]
  y = np.einsum("bgchwij,gocij->bgohw", win.reshape(n, groups, cg, ho, wo, kh, kw), w.reshape(groups, o // groups, cg, kh, kw), optimize=True)
  y = y.reshape(n, o, ho, wo)
  return y if b is None else y + b[None, :, None, None]


def np_bn(w, x, k):
  """torch.nn.BatchNorm2d in eval mode: (x − running_mean) / √(running_var + 1e-5) · weight + bias."""
  r = lambda a: a[None, :, None, None]  # noqa: E731
  return (x - r(w[f"{k}.running_mean"])) / np.sqrt(r(w[f"{k}.running_var"]) + 1e-5) * r(w[f"{k}.weight"]) + r(w[f"{k}.bias"])


def np_maxpool(x, k, s, pad=0):
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
  return np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(4, 5))


def np_adaptive_avg(x, out):
  h, w = x.shape[2:]
  y = np.zeros(x.shape[:2] + (out, out))
  for i in range(out):
    for j in range(out):
      r0, r1, c0, c1 = i * h // out, -(-(i + 1) * h // out), j * w // out, -(-(j + 1) * w // out)
      y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
  return y


relu = lambda x: np.maximum(x, 0)  # noqa: E731
relu6 = lambda x: np.clip(x, 0, 6)  # noqa: E731
sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
silu = lambda x: x * sigmoid(x)  # noqa: E731
fc = lambda w, x, k: x @ w[f"{k}.weight"].T + w[f"{k}.bias"]  # noqa: E731


def np_resnet(w, x, layers, bottleneck):
  x = np_maxpool(relu(np_bn(w, np_conv(x, w["conv1.weight"], stride=2, pad=3), "bn1")), 3, 2, 1)
  for li, n in enumerate(layers, 1):
    for j in range(n):
      k, s = f"layer{li}.{j}", 2 if li > 1 and j == 0 else 1
      if bottleneck:
        h = relu(np_bn(w, np_conv(x, w[f"{k}.conv1.weight"]), f"{k}.bn1"))
        h = relu(np_bn(w, np_conv(h, w[f"{k}.conv2.weight"], stride=s, pad=1), f"{k}.bn2"))
        h = np_bn(w, np_conv(h, w[f"{k}.conv3.weight"]), f"{k}.bn3")
      else:
        h = relu(np_bn(w, np_conv(x, w[f"{k}.conv1.weight"], stride=s, pad=1), f"{k}.bn1"))
        h = np_bn(w, np_conv(h, w[f"{k}.conv2.weight"], pad=1), f"{k}.bn2")
      sc = np_bn(w, np_conv(x, w[f"{k}.downsample.0.weight"], stride=s), f"{k}.downsample.1") if f"{k}.downsample.0.weight" in w else x
      x = relu(h + sc)
  return fc(w, x.mean(axis=(2, 3)), "fc")


def np_mobilenet_v2(w, x):
  x = relu6(np_bn(w, np_conv(x, w["features.0.0.weight"], stride=2, pad=1), "features.0.1"))
  i = 1
  for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
    for j in range(n):
      k, st, h, m = f"features.{i}.conv", s if j == 0 else 1, x, 0
      if t != 1: h, m = relu6(np_bn(w, np_conv(h, w[f"{k}.0.0.weight"]), f"{k}.0.1")), 1
      h = relu6(np_bn(w, np_conv(h, w[f"{k}.{m}.0.weight"], stride=st, pad=1, groups=h.shape[1]), f"{k}.{m}.1"))
      h = np_bn(w, np_conv(h, w[f"{k}.{m + 1}.weight"]), f"{k}.{m + 2}")
      x = x + h if st == 1 and x.shape[1] == c else h
      i += 1
  x = relu6(np_bn(w, np_conv(x, w["features.18.0.weight"]), "features.18.1"))
  return fc(w, x.mean(axis=(2, 3)), "classifier.1")


def np_efficientnet_b0(w, x):
  x = silu(np_bn(w, np_conv(x, w["features.0.0.weight"], stride=2, pad=1), "features.0.1"))
  for si, (t, kk, s, c, n) in enumerate(((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                                         (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)), 1):
    for j in range(n):
      k, st, h, m = f"features.{si}.{j}.block", s if j == 0 else 1, x, 0
      if t != 1: h, m = silu(np_bn(w, np_conv(h, w[f"{k}.0.0.weight"]), f"{k}.0.1")), 1
      h = silu(np_bn(w, np_conv(h, w[f"{k}.{m}.0.weight"], stride=st, pad=kk // 2, groups=h.shape[1]), f"{k}.{m}.1"))
      se = h.mean(axis=(2, 3), keepdims=True)
      se = silu(np_conv(se, w[f"{k}.{m + 1}.fc1.weight"], w[f"{k}.{m + 1}.fc1.bias"]))
      h = h * sigmoid(np_conv(se, w[f"{k}.{m + 1}.fc2.weight"], w[f"{k}.{m + 1}.fc2.bias"]))
      h = np_bn(w, np_conv(h, w[f"{k}.{m + 2}.0.weight"]), f"{k}.{m + 2}.1")
      x = x + h if st == 1 and x.shape[1] == c else h
  x = silu(np_bn(w, np_conv(x, w["features.8.0.weight"]), "features.8.1"))
  return fc(w, x.mean(axis=(2, 3)), "classifier.1")


def np_vgg16(w, x):
  i = 0
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
    if v == "M": x, i = np_maxpool(x, 2, 2), i + 1
    else: x, i = relu(np_conv(x, w[f"features.{i}.weight"], w[f"features.{i}.bias"], pad=1)), i + 2
  x = np_adaptive_avg(x, 7).reshape(x.shape[0], -1)
  x = relu(fc(w, relu(fc(w, x, "classifier.0")), "classifier.3"))
  return fc(w, x, "classifier.6")


REFERENCE = {"resnet18": lambda w, x: np_resnet(w, x, (2, 2, 2, 2), False), "resnet50": lambda w, x: np_resnet(w, x, (3, 4, 6, 3), True),
             "mobilenet_v2": np_mobilenet_v2, "efficientnet_b0": np_efficientnet_b0, "vgg16": np_vgg16}


def compare_model(name, size, seed=1):
  p = zm.build(name, seed)
  x = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
  got = zm.forward(name, p.state, Tensor(x)).numpy()
  ref = REFERENCE[name]({k: v.numpy().astype(np.float64) for k, v in p.state.items()}, x.astype(np.float64))
  assert got.shape == (1, 1000)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# the forwards at 32 px and batch 1 are the zoo quick bench's, whose kernels the program cache then holds (the suite's
# lanes run these after it); `noopt` puts NOOPT=1 in this process's environment as in the bench's, so the keys match
@pytest.mark.noopt
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_model_matches_numpy(name):
  compare_model(name, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param("resnet50", marks=pytest.mark.noopt), pytest.param("efficientnet_b0", marks=pytest.mark.noopt),
                                  "vgg16"])
def test_big_model_matches_numpy(name):
  compare_model(name, 32 if name != "vgg16" else 40)        # 40 px: VGG's last map is 1x1, pooled up to 7x7


def test_blocks_match_numpy():
  """Every block type at a small size: bottleneck with a strided projection, MBConv with SE and a 5x5 depthwise, and
  the residual MBConv; adaptive pooling from 5x5 and 9x9 (bins that overlap)."""
  rng = np.random.default_rng(0)
  for fn, cin, ref in ((lambda p, x: zm.resnet_block(p, x, "b", 8, 2, True), 16, lambda w, x: np_resnet_block(w, x)),
                       (lambda p, x: zm.mbconv(p, x, "m", 24, 5, 2, 6), 16, lambda w, x: np_mbconv(w, x, 5, 2, 6)),
                       (lambda p, x: zm.mbconv(p, x, "m", 16, 3, 1, 6), 16, lambda w, x: np_mbconv(w, x, 3, 1, 6))):
    p = zm.Params(init=zm.random_init(3))
    x = rng.standard_normal((2, cin, 9, 9)).astype(np.float32)
    got = fn(p, Tensor(x)).numpy()
    want = ref({k: v.numpy().astype(np.float64) for k, v in p.state.items()}, x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  for n in (5, 9):
    x = rng.standard_normal((1, 2, n, n)).astype(np.float32)
    np.testing.assert_allclose(zm.adaptive_avg_pool(Tensor(x), 7).numpy(), np_adaptive_avg(x.astype(np.float64), 7), rtol=1e-5, atol=1e-6)


def np_resnet_block(w, x):
  h = relu(np_bn(w, np_conv(x, w["b.conv1.weight"]), "b.bn1"))
  h = relu(np_bn(w, np_conv(h, w["b.conv2.weight"], stride=2, pad=1), "b.bn2"))
  h = np_bn(w, np_conv(h, w["b.conv3.weight"]), "b.bn3")
  return relu(h + np_bn(w, np_conv(x, w["b.downsample.0.weight"], stride=2), "b.downsample.1"))


def np_mbconv(w, x, k, s, t):
  h = silu(np_bn(w, np_conv(x, w["m.0.0.weight"]), "m.0.1"))
  h = silu(np_bn(w, np_conv(h, w["m.1.0.weight"], stride=s, pad=k // 2, groups=h.shape[1]), "m.1.1"))
  se = silu(np_conv(h.mean(axis=(2, 3), keepdims=True), w["m.2.fc1.weight"], w["m.2.fc1.bias"]))
  h = np_bn(w, np_conv(h * sigmoid(np_conv(se, w["m.2.fc2.weight"], w["m.2.fc2.bias"])), w["m.3.0.weight"]), "m.3.1")
  return x + h if s == 1 and x.shape[1] == h.shape[1] else h


# ---- torchvision's layout ------------------------------------------------------------------------

def bn_keys(k, c):
  return [(f"{k}.weight", (c,)), (f"{k}.bias", (c,)), (f"{k}.running_mean", (c,)), (f"{k}.running_var", (c,)), (f"{k}.num_batches_tracked", ())]


def resnet18_layout():
  """From torchvision's resnet.py: conv1/bn1, layer1..4 of two BasicBlocks (conv1, bn1, conv2, bn2, downsample.0/.1 when the
  stride or width changes), fc."""
  keys, cin = [("conv1.weight", (64, 3, 7, 7))] + bn_keys("bn1", 64), 64
  for li, width in enumerate((64, 128, 256, 512), 1):
    for j in range(2):
      k, s = f"layer{li}.{j}", 2 if li > 1 and j == 0 else 1
      keys += [(f"{k}.conv1.weight", (width, cin, 3, 3))] + bn_keys(f"{k}.bn1", width)
      keys += [(f"{k}.conv2.weight", (width, width, 3, 3))] + bn_keys(f"{k}.bn2", width)
      if s != 1 or cin != width: keys += [(f"{k}.downsample.0.weight", (width, cin, 1, 1))] + bn_keys(f"{k}.downsample.1", width)
      cin = width
  return dict(keys + [("fc.weight", (1000, 512)), ("fc.bias", (1000,))])


def test_layouts_are_torchvisions():
  assert list(zm.layout("resnet18").items()) == list(resnet18_layout().items())
  for name, n in zm.TORCHVISION_PARAMS.items(): assert zm.n_params(zm.layout(name)) == n, name
  lay = zm.layout("efficientnet_b0")
  assert lay["features.1.0.block.1.fc1.weight"] == (8, 32, 1, 1) and lay["features.2.0.block.2.fc2.weight"] == (96, 4, 1, 1)
  assert lay["features.3.0.block.1.0.weight"] == (144, 1, 5, 5) and lay["features.8.0.weight"] == (1280, 320, 1, 1)
  assert zm.layout("mobilenet_v2")["features.1.conv.1.weight"] == (16, 32, 1, 1) and zm.layout("vgg16")["classifier.0.weight"] == (4096, 25088)


@pytest.mark.parametrize("name", list(zm.MODELS))
def test_no_kernel_holds_two_sums(name):
  """Each conv is its own kernel: a kernel with two sums (a conv recomputed inside the pool's sum, or a downsample conv
  inside the block's last conv) gets no tensor cores and, for the pool, one thread per image and channel."""
  from tinygrad.uop.ops import Ops
  state = {k: Tensor.empty(*s) for k, s in zm.layout(name).items()}
  out = zm.forward(name, state, Tensor.empty(2, 3, 64, 64))
  asts = [c.src[0] for c in out.schedule_linear().toposort() if c.op is Ops.CALL and c.src[0].op is Ops.SINK]
  assert len(asts) > 20
  assert [i for i, a in enumerate(asts) if sum(u.op is Ops.REDUCE for u in a.toposort()) > 1] == []


def test_largest_activation_follows_the_image_size():
  assert zm.largest_activation("resnet18", 224) == 64 * 112 * 112 and zm.largest_activation("vgg16", 224) == 64 * 224 * 224
  assert zm.largest_activation("resnet18", 64) == 64 * 32 * 32


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
  from common.files import save_checkpoint
  rng = np.random.default_rng(0)
  state = {k: rng.standard_normal(s).astype(np.float32) if not k.endswith("num_batches_tracked") else np.array(0, np.int64)
           for k, s in resnet18_layout().items()}
  path = tmp_path_factory.mktemp("zoo") / "resnet18.safetensors"
  save_checkpoint(state, path)
  return path, state


def test_state_dict_loads_and_wrong_ones_are_refused(resnet18_file, tmp_path):
  from common import UserError
  from common.files import save_checkpoint
  path, state = resnet18_file
  loaded = model_zoo.load_weights(str(path), "resnet18")
  assert set(loaded) == set(state) - {k for k in state if k.endswith("num_batches_tracked")}
  np.testing.assert_array_equal(loaded["layer3.0.downsample.0.weight"].numpy(), state["layer3.0.downsample.0.weight"])
  no_counts = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}    # torchvision's older files
  missing = {k: v for k, v in state.items() if k != "layer2.1.bn2.running_var"}
  for label, bad, fragment in (("missing", missing, "missing key 'layer2.1.bn2.running_var'"),
                               ("extra", {**no_counts, "fc.extra": np.zeros(3, np.float32)}, "unexpected key 'fc.extra'"),
                               ("shape", {**no_counts, "fc.weight": np.zeros((1000, 511), np.float32)}, "'fc.weight' has shape (1000, 511)")):
    f = tmp_path / f"{label}.safetensors"
    save_checkpoint(bad, f)
    with pytest.raises(UserError) as e: model_zoo.load_weights(str(f), "resnet18")
    assert fragment in str(e.value) and "\n" not in str(e.value)
  save_checkpoint(no_counts, tmp_path / "ok.safetensors")
  assert len(model_zoo.load_weights(str(tmp_path / "ok.safetensors"), "resnet18")) == len(no_counts)
  with pytest.raises(UserError, match="for resnet50: .layer1.0.conv1.weight. has shape"): model_zoo.load_weights(str(path), "resnet50")


def test_preprocess_and_top5():
  rgb = np.ones((300, 400, 3), np.float32) * np.array([0.2, 0.5, 0.8], np.float32)
  x = model_zoo.preprocess(rgb)
  assert x.shape == (1, 3, 224, 224)
  np.testing.assert_allclose(x[0, :, 100, 100], (np.array([0.2, 0.5, 0.8]) - model_zoo.MEAN) / model_zoo.STD, atol=3e-2)
  ramp = np.tile(np.linspace(0, 1, 512, dtype=np.float32)[None, :, None], (256, 1, 3))    # 256 x 512: kept at 256 x 512, center columns
  col = model_zoo.preprocess(ramp)[0, 0, 0] * model_zoo.STD[0] + model_zoo.MEAN[0]
  assert abs(col[0] - 144 / 511) < 0.01 and abs(col[-1] - 367 / 511) < 0.01
  labels = model_zoo.read_labels()
  assert labels[0] == "tench" and labels[207] == "golden retriever" and labels[999] == "toilet tissue"
  logits = np.zeros(1000, np.float32)
  logits[[7, 3, 500]] = [3.0, 2.0, 1.0]
  best = model_zoo.top5(logits, labels)
  assert [b[0] for b in best[:3]] == [7, 3, 500] and best[0][1] == "cock"
  assert abs(best[0][2] - np.exp(3) / (np.exp(3) + np.exp(2) + np.exp(1) + 997)) < 1e-6


# ---- the script ------------------------------------------------------------------------------------

def test_bad_input_is_one_line(resnet18_file, tmp_path):
  bad_input(SCRIPT, "--model", "alexnet", fragments=("--model", "alexnet"))
  bad_input(SCRIPT, "--model", "resnet18", "--image", "x.png", fragments=("--image needs --weights",))
  bad_input(SCRIPT, "--bench", "--precisions", "tf32", fragments=("tf32", "CUDA"))
  bad_input(SCRIPT, "--model", "resnet18", "--weights", str(tmp_path / "none.pth"), fragments=("no such file",))
  (tmp_path / "junk.pth").write_bytes(b"not a zip")
  bad_input(SCRIPT, "--model", "resnet18", "--weights", str(tmp_path / "junk.pth"), fragments=("cannot be read",))
  bad_input(SCRIPT, "--model", "mobilenet_v2", "--weights", str(resnet18_file[0]), fragments=("for mobilenet_v2", "key"))
  bad_input(str(ROOT / "edge-deploy" / "zoo_torch_reference.py"), "--model", "alexnet", fragments=("--model", "alexnet"))
  import importlib.util
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
    bad_input(str(ROOT / "edge-deploy" / "zoo_torch_reference.py"), "--quick", fragments=("PyTorch and torchvision are not installed",))


@pytest.mark.noopt
@pytest.mark.slow
def test_weights_and_image_print_top5(resnet18_file, tmp_path):
  from PIL import Image
  Image.new("RGB", (320, 240), (200, 30, 30)).save(tmp_path / "red.png")
  r = run_py(SCRIPT, "--model", "resnet18", "--weights", str(resnet18_file[0]), "--image", str(tmp_path / "red.png"), "--out", str(tmp_path),
             timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.count(" %  ") == 5 and "(class " in r.stdout


@pytest.mark.noopt
@pytest.mark.slow
def test_quick_bench_json_validates(tmp_path):
  from common.bench import validate
  # every model at the smallest size that keeps them all valid, fp32 and batch 1 only (fp16 is 2-10x slower on a
  # CPU, and each batch size compiles its own kernels); test_small_bench_json_validates covers the batch records
  r = run_py(SCRIPT, "--bench", "--quick", "--precisions", "fp32", "--size", "32", "--batch", "1", "--json", str(tmp_path / "zoo.json"),
             "--out", str(tmp_path), timeout=1800)
  assert r.returncode == 0, r.stderr[-2000:]
  recs = validate(json.loads((tmp_path / "zoo.json").read_text()))
  assert {r["case"] for r in recs} == {f"{m} fp32 b=1" for m in zm.MODELS}
  for rec in recs: assert rec["kernels"] > 10 and rec["gflop"] > 0 and rec["mem_bytes"] > 0 and rec["planned_bytes"] > 0


@pytest.mark.noopt
def test_small_bench_json_validates(tmp_path):
  from common.bench import validate
  r = run_py(SCRIPT, "--bench", "--quick", "--model", "resnet18", "--precisions", "fp32", "--size", "32", "--batch", "2",
             "--json", str(tmp_path / "zoo.json"), "--out", str(tmp_path), timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  recs = validate(json.loads((tmp_path / "zoo.json").read_text()))
  assert [r["case"] for r in recs] == ["resnet18 fp32 b=1", "resnet18 fp32 b=2"]
  assert recs[0]["metric"] == "latency" and recs[1]["unit"] == "images/s" and recs[0]["kernels"] > 20
  assert recs[1]["gflop"] > 1.5 * recs[0]["gflop"] > 0 and recs[1]["mem_bytes"] > 4 * 11_689_512
  assert Path(tmp_path / "zoo.json").stat().st_size > 0
