"""common.conv against numpy: the forward and both gradients, for stride 1 and 2, padding, groups,
a split weight gradient, the stored-patch (gemm) form, and a nearest-upsampled input (as the U-Net's decoder feeds it)."""
import numpy as np
import pytest
import common  # noqa: F401
from tinygrad import Tensor
from common.conv import conv2d, Conv2d, default_split


def numpy_conv(x, w, bias, stride, padding, groups):
  """Direct definition: y[b, o, i, j] = Σ_{c in o's group, dy, dx} w[o, c, dy, dx] x_pad[b, c, s·i+dy, s·j+dx] + bias[o]."""
  b, c, h, wd = x.shape
  o, cg, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
  y = np.zeros((b, o, ho, wo))
  og = o // groups
  for oc in range(o):
    g = oc // og
    for dy in range(kh):
      for dx in range(kw):
        patch = xp[:, g * cg:(g + 1) * cg, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]
        y[:, oc] += np.einsum("bchw,c->bhw", patch, w[oc, :, dy, dx])
  return y + bias[None, :, None, None]


def numpy_grads(x, w, bias, stride, padding, groups, gy, eps=1e-3):
  """∂(Σ y·gy)/∂x and /∂w by the chain rule on the direct definition (loops over taps, not autograd)."""
  b, c, h, wd = x.shape
  o, cg, kh, kw = w.shape
  ho, wo = gy.shape[2:]
  og = o // groups
  gxp = np.zeros((b, c, h + 2 * padding, wd + 2 * padding))
  xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  gw = np.zeros_like(w)
  for oc in range(o):
    g = oc // og
    for dy in range(kh):
      for dx in range(kw):
        sl = (slice(None), slice(g * cg, (g + 1) * cg), slice(dy, dy + stride * (ho - 1) + 1, stride), slice(dx, dx + stride * (wo - 1) + 1, stride))
        gw[oc, :, dy, dx] = np.einsum("bchw,bhw->c", xp[sl], gy[:, oc])
        gxp[sl] += np.einsum("c,bhw->bchw", w[oc, :, dy, dx], gy[:, oc])
  return gxp[:, :, padding:padding + h, padding:padding + wd], gw, gy.sum((0, 2, 3))


@pytest.mark.parametrize("stride, padding, groups, split, k", [(1, 1, 1, 1, 3), (2, 1, 1, 1, 3), (1, 0, 2, 1, 3), (2, 1, 1, 2, 3),
                                                               (1, 0, 1, 4, 1), (1, 2, 1, 1, 5)])
def test_forward_and_gradients_match_numpy(stride, padding, groups, split, k):
  rng = np.random.default_rng(stride * 10 + padding + groups + split)
  x = rng.standard_normal((4, 4, 9, 8)).astype(np.float32)
  w = rng.standard_normal((6, 4 // groups, k, k)).astype(np.float32)
  bias = rng.standard_normal(6).astype(np.float32)
  tx, tw, tb = Tensor(x), Tensor(w), Tensor(bias)
  y = conv2d(tx, tw, tb, stride=stride, padding=padding, groups=groups, split=split)
  ref = numpy_conv(x.astype(np.float64), w.astype(np.float64), bias, stride, padding, groups)
  np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)
  gy = rng.standard_normal(ref.shape).astype(np.float32)
  gtx, gtw, gtb = (y * Tensor(gy)).sum().gradient(tx, tw, tb)
  gx, gw, gb = numpy_grads(x.astype(np.float64), w.astype(np.float64), bias, stride, padding, groups, gy.astype(np.float64))
  np.testing.assert_allclose(gtx.numpy(), gx, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gtw.numpy(), gw, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(gtb.numpy(), gb, rtol=1e-4, atol=1e-4)


def test_upsampled_input_gradient_matches_numpy():
  rng = np.random.default_rng(7)
  x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
  w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
  bias = np.zeros(5, np.float32)
  tx = Tensor(x)
  up = tx.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)           # nearest 2x upsampling
  y = conv2d(up, Tensor(w), Tensor(bias), padding=1)
  gy = rng.standard_normal(y.shape).astype(np.float32)
  (gtx,) = (y * Tensor(gy)).sum().gradient(tx)
  xu = x.repeat(2, axis=2).repeat(2, axis=3).astype(np.float64)
  np.testing.assert_allclose(y.numpy(), numpy_conv(xu, w.astype(np.float64), bias, 1, 1, 1), rtol=1e-4, atol=1e-4)
  gxu, _, _ = numpy_grads(xu, w.astype(np.float64), bias, 1, 1, 1, gy.astype(np.float64))
  gx = gxu.reshape(2, 3, 4, 2, 4, 2).sum((3, 5))                           # the upsampling's gradient: each 2x2 block's sum
  np.testing.assert_allclose(gtx.numpy(), gx, rtol=1e-4, atol=1e-4)


def test_phase_taps_split_a_3x3_kernel_at_factor_2_as_the_docstring_says():
  from common.conv import phase_taps
  # phase 0 reads x[i-1], x[i] with w0 and w1+w2; phase 1 reads x[i], x[i+1] with w0+w1 and w2
  assert phase_taps(2, 3, 1) == [(-1, [[0], [1, 2]]), (0, [[0, 1], [2]])]
  assert phase_taps(2, 1, 0) == [(0, [[0]]), (0, [[0]])]


@pytest.mark.parametrize("factor, k, phases", [(2, 3, "1"), (2, 5, "1"), (3, 3, "1"), (2, 1, "1"), (2, 3, "0")])
def test_upsampled_conv_as_phase_convolutions_matches_numpy_with_gradients(factor, k, phases, monkeypatch):
  """conv(x, w, upsample=f) = the convolution of the nearest-upsampled x; by default it runs as f² phase
  convolutions on the small input (CONV_PHASES=0: upsample, then convolve). Both forms, against numpy."""
  import common.conv as cc
  monkeypatch.setenv("CONV_PHASES", phases)
  calls = []
  monkeypatch.setattr(cc, "upsample_conv2d", lambda *a, _f=cc.upsample_conv2d: calls.append(1) or _f(*a))
  rng = np.random.default_rng(factor * 10 + k)
  x, w, bias = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((4, 3, k, k)) * 0.3, rng.standard_normal(4)
  tx, tw, tb = (Tensor(a.astype(np.float32)) for a in (x, w, bias))
  y = cc.conv(tx, tw, tb, 1, k // 2, upsample=factor)
  assert len(calls) == (phases == "1")
  gy = rng.standard_normal(y.shape)
  gtx, gtw, gtb = (y * Tensor(gy.astype(np.float32))).sum().gradient(tx, tw, tb)   # before y is realized (conv2d_gemm's docstring)
  xu = x.repeat(factor, 2).repeat(factor, 3)
  np.testing.assert_allclose(y.numpy(), numpy_conv(xu, w, bias, 1, k // 2, 1), rtol=1e-4, atol=1e-4)
  gxu, gw, gb = numpy_grads(xu, w, bias, 1, k // 2, 1, gy)
  gx = gxu.reshape(2, 3, 5, factor, 4, factor).sum((3, 5))                # the upsampling's gradient: each f×f block's sum
  for got, want in ((gtx, gx), (gtw, gw), (gtb, gb)): np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)


def test_module_is_a_drop_in_for_nn_conv2d():
  from tinygrad import nn
  from tinygrad.nn.state import get_state_dict
  Tensor.manual_seed(3)
  ours = Conv2d(4, 8, 3, stride=2, padding=1)
  Tensor.manual_seed(3)
  theirs = nn.Conv2d(4, 8, 3, stride=2, padding=1)
  assert {k: v.shape for k, v in get_state_dict(ours).items()} == {k: v.shape for k, v in get_state_dict(theirs).items()}
  x = Tensor(np.random.default_rng(0).standard_normal((8, 4, 10, 10)).astype(np.float32))
  np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)


def test_module_upsample_and_form_choice(monkeypatch):
  from tinygrad import nn
  monkeypatch.delenv("CONV_FORM", raising=False)
  from common.conv import conv_form, upsample_nearest
  gpu = lambda *a: conv_form(*a, device="CUDA")                      # noqa: E731
  assert gpu((3, 3), (2, 2), 1, 1, 64) == gpu((3, 3), (1, 2), 1, 1, 3) == gpu((3, 3), (1, 1), 2, 1, 3) == "gemm"   # strided, upsampled
  assert gpu((3, 3), (1, 1), 1, 1, 128) == gpu((3, 3), (1, 1), 1, 1, 1) == "winograd"                              # 3x3 stride 1, training
  half = lambda *a: conv_form(*a, device="CUDA", half=True)          # noqa: E731  (fp16: no Winograd, its transforms lose digits)
  assert half((3, 3), (1, 1), 1, 1, 128) == "gemm" and half((3, 3), (1, 1), 1, 1, 64) == "conv2d"                 # wide, narrow
  monkeypatch.setenv("CONV_WINOGRAD", "0")
  assert gpu((3, 3), (1, 1), 1, 1, 128) == "gemm" and gpu((3, 3), (1, 1), 1, 1, 64) == "conv2d"
  monkeypatch.delenv("CONV_WINOGRAD")
  assert gpu((1, 1), (1, 1), 1, 1, 512) == gpu((3, 3), (2, 2), 1, 32, 32) == "conv2d"                             # 1x1, depthwise
  assert conv_form((3, 3), (1, 1), 1, 1, 3, device="CPU") == "gemm" and conv_form((1, 1), (1, 1), 1, 1, 8, device="CPU") == "conv2d"
  fixed = dict(weight_grad=False)                                    # only dL/dx: style transfer's VGG
  assert conv_form((3, 3), (1, 1), 1, 1, 512, device="CUDA", **fixed) == "views"
  assert conv_form((3, 3), (1, 1), 1, 1, 64, device="CPU", **fixed) == "gemm"
  assert conv_form((1, 1), (1, 1), 1, 1, 512, device="CUDA", **fixed) == "conv2d"
  infer = dict(backward=False, half=True)                            # fp16 inference: the model zoo
  assert conv_form((3, 3), (1, 1), 1, 1, 64, device="CUDA", **infer) == conv_form((1, 1), (2, 2), 1, 1, 64, device="CUDA", **infer) == "gemm"
  assert conv_form((1, 1), (1, 1), 1, 1, 512, device="CUDA", **infer) == conv_form((3, 3), (1, 1), 1, 32, 32, device="CUDA", **infer) == "conv2d"
  assert conv_form((3, 3), (1, 1), 1, 1, 64, device="CUDA", backward=False) == "conv2d"                          # fp32: the training rule
  monkeypatch.setenv("CONV_FORM", "training")                        # the training rule for inference too, to compare
  assert conv_form((3, 3), (1, 1), 1, 1, 64, device="CUDA", **infer) == "conv2d"
  assert conv_form((3, 3), (2, 2), 1, 1, 64, device="CUDA", **infer) == "gemm"
  monkeypatch.delenv("CONV_FORM")
  Tensor.manual_seed(5)
  ours = Conv2d(6, 4, 3, padding=1)
  Tensor.manual_seed(5)
  theirs = nn.Conv2d(6, 4, 3, padding=1)
  x = Tensor(np.random.default_rng(1).standard_normal((2, 6, 5, 5)).astype(np.float32))
  np.testing.assert_allclose(upsample_nearest(x, 2).numpy(), x.numpy().repeat(2, 2).repeat(2, 3))
  np.testing.assert_allclose(ours(x, upsample=2).numpy(), theirs(upsample_nearest(x, 2)).numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)     # the conv2d form


def test_default_split_divides_the_batch_and_keeps_pieces_long():
  assert default_split(128, 64 * 64 * 9, 128 * 14 * 14) == 1          # 36,864 outputs: already enough to fill a GPU
  s = default_split(128, 32 * 3 * 9, 128 * 16 * 16)                   # 864 outputs over 32,768 numbers
  assert s > 1 and 128 % s == 0 and 128 * 16 * 16 // s >= 256
  assert default_split(7, 10, 10 ** 6) in (1, 7)


@pytest.mark.parametrize("form", ["auto", "gemm", "views", "winograd"])
def test_functional_conv_and_its_gradients_match_numpy_in_every_form(form, monkeypatch):
  import common.conv as cc
  monkeypatch.setenv("CONV_FORM", form)
  rng = np.random.default_rng(11)
  x, w, bias = rng.standard_normal((4, 3, 9, 7)), rng.standard_normal((5, 3, 3, 3)) * 0.3, rng.standard_normal(5)
  for stride in (1, 2):
    tx, tw, tb = (Tensor(a.astype(np.float32)) for a in (x, w, bias))
    y = cc.conv(tx, tw, tb, stride, 1)
    g = rng.standard_normal(y.shape)
    grads = (y * Tensor(g.astype(np.float32))).sum().gradient(tx, tw, tb)
    np.testing.assert_allclose(y.numpy(), numpy_conv(x, w, bias, stride, 1, 1), rtol=1e-4, atol=1e-4)
    for got, want in zip(grads, numpy_grads(x, w, bias, stride, 1, 1, g)): np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
  tx, tw, tb = (Tensor(a.astype(np.float32)) for a in (x, w, bias))
  np.testing.assert_allclose(cc.conv(tx, tw, tb, 1, 1, upsample=2).numpy(), numpy_conv(x.repeat(2, 2).repeat(2, 3), w, bias, 1, 1, 1),
                             rtol=1e-4, atol=1e-4)
  monkeypatch.setenv("CONV_FORM", "fast")
  with pytest.raises(ValueError, match="CONV_FORM"): cc.conv(tx, tw, tb, 1, 1)


@pytest.mark.parametrize("stride, padding, split", [(1, 1, 1), (2, 1, 1), (1, 1, 4), (2, 0, 2), (1, 2, 3)])
def test_gemm_form_and_its_gradients_match_numpy(stride, padding, split):
  from common.conv import conv2d_gemm
  rng = np.random.default_rng(stride * 7 + padding + split)
  x, w, bias = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((5, 4, 3, 3)) * 0.3, rng.standard_normal(5)
  tx, tw, tb = (Tensor(a.astype(np.float32)) for a in (x, w, bias))
  y = conv2d_gemm(tx, tw, tb, stride, padding, split)
  ref = numpy_conv(x, w, bias, stride, padding, 1)
  g = rng.standard_normal(ref.shape)
  # gradients first: realizing y first would store the patch matrix and cut ∂L/∂x there (tinygrad's rule for .contiguous())
  gx, gw, gb = (y * Tensor(g.astype(np.float32))).sum().gradient(tx, tw, tb)
  np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-4)
  ngx, ngw, ngb = numpy_grads(x, w, bias, stride, padding, 1, g)
  np.testing.assert_allclose(gx.numpy(), ngx, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gw.numpy(), ngw, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(gb.numpy(), ngb, rtol=1e-4, atol=1e-4)


def test_gemm_split_leaves_few_outputs_to_a_gpus_heuristic_and_divides_the_rows():
  from common.conv import gemm_split
  assert gemm_split(128 * 28 * 28, 9 * 64, "CUDA") == 1 == gemm_split(128 * 28 * 28, 9 * 64, "NV")   # 576 outputs: GROUPTOP splits them
  assert gemm_split(128 * 28 * 28, 9 * 64, "CPU") == 32               # a CPU has no GROUPTOP
  for dev in ("CUDA", "CPU"):
    assert gemm_split(128 * 14 * 14, 1152 * 128, dev) == 32
    assert gemm_split(6 * 7 * 5, 10 ** 5, dev) == 1                   # 210 rows: no two pieces of >= 128 rows
    assert gemm_split(4096, 10 ** 6, dev) == 32 and gemm_split(7 * 128, 10 ** 6, dev) == 7


# The convolutions that stay tinygrad's conv2d on purpose, and why:
NOT_TRAINED = {"style-transfer/style_transfer.py": "the fixed blur of the image pyramid, and --conv direct (tinygrad's conv2d, to compare)",
               "audio-ml/logmel.py": "the fixed DFT filters of the log-mel framing",
               "edge-deploy/fusion_beam.py": "the fusion lesson shows what tinygrad makes of its own conv2d"}


def test_every_project_trains_its_convolutions_with_the_shared_mechanism():
  """No project builds its own nn.Conv2d layers; .conv2d( appears only where NOT_TRAINED says why."""
  from pathlib import Path
  root = Path(__file__).resolve().parents[1]
  for path in sorted(root.glob("*/*.py")):
    rel = path.relative_to(root).as_posix()
    if rel.startswith(("common/", "tests/", "scripts/", "backend/", ".")) or path.name == "torch_reference.py": continue
    text = path.read_text()
    assert "nn.Conv2d(" not in text, f"{rel}: use common.conv.Conv2d"
    if ".conv2d(" in text: assert rel in NOT_TRAINED, f"{rel}: call common.conv.conv (or say in NOT_TRAINED why not)"


def test_half_precision_conv_computes_in_fp16_from_fp32_weights_and_gives_fp32_gradients():
  from tinygrad import dtypes
  from common.mixed import half_precision
  Tensor.manual_seed(2)
  layer = Conv2d(3, 4, 3, stride=2, padding=1)
  x = Tensor(np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32))
  ref = layer(x).numpy()
  assert half_precision({"net": [layer]}) == 1 and layer.compute_dtype == dtypes.half
  y = layer(x)
  assert y.dtype == dtypes.float32 and layer.weight.dtype == dtypes.float32
  np.testing.assert_allclose(y.numpy(), ref, rtol=2e-2, atol=2e-2)             # fp16 products: ~3 significant digits
  (gw,) = y.sum().gradient(layer.weight)
  assert gw.dtype == dtypes.float32 and np.isfinite(gw.numpy()).all()
