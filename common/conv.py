"""A 2-D convolution whose forward and both gradients are matrix products, and the one convolution
module every project that trains convolutional nets uses (`Conv2d`: a drop-in for tinygrad's
nn.Conv2d with the same `weight`/`bias` state-dict keys, which picks the faster form per layer).

Why not tinygrad's own conv2d: it is built on a pooling view of the input, and autograd differentiates
through that view. The input gradient then comes out as a masked window per pixel and the weight
gradient as one long reduction with few outputs; tinygrad's heuristic (no BEAM) runs both far below the
forward's speed. Written out as im2col and a product, autograd derives the textbook backward instead:

  forward   cols[b, c, t, i, j] = x_pad[b, c, s·i + dy_t, s·j + dx_t]      t = (dy, dx): k_h·k_w shifted views
            y[b, o, i, j]       = Σ_{c,t} w[o, c, t] · cols[b, c, t, i, j] + bias[o]          (per group)
  input     ∂L/∂cols = Σ_o w[o, c, t] · ∂L/∂y[b, o, i, j]                   a product, like the forward
            ∂L/∂x    = Σ_t ∂L/∂cols[:, :, t] moved back by (dy_t, dx_t)      "col2im": k_h·k_w shifted adds
  weight    ∂L/∂w[o, c, t] = Σ_{b,i,j} ∂L/∂y[b, o, i, j] · cols[b, c, t, i, j]

The weight gradient reduces over B·H·W numbers for each of only O·C·k² outputs. `split` cuts that
reduction in S pieces (the batch in S chunks, each with its own broadcast copy of w whose gradient is
materialized by contiguous_backward), so the first kernel has S times the outputs to spread over the
GPU and a second one sums the S partial gradients: the split-K of a matrix product, done by autograd.

`conv2d` never stores the cols tensor: its views are read inside the product's kernel. `conv2d_gemm` stores it,
channels last, so that all three products are plain GEMMs; `conv_form` picks the form per layer and device.

A convolution of a nearest-upsampled input (a decoder's step) never builds the upsampled tensor. Along one axis,
output pixel f·i + a (phase a of f) of a "same" k-tap convolution reads only small-input pixels i + d, and the
taps that land on the same pixel add up:

  y[f·i + a] = Σ_d w_a[d] · x[i + d]        w_a[d] = Σ_{t: ⌊(a + t − p)/f⌋ = d} w[t]

so the layer is f² ordinary convolutions of the small input with smaller kernels (3×3 at f = 2: four 2×2,
16 multiply-adds per pixel and channel pair instead of 36), interleaved at the end (`upsample_conv2d`).
"""
from __future__ import annotations
import math, os

from tinygrad import Context, Tensor, dtypes, nn


def _pair(v: int | tuple[int, int]) -> tuple[int, int]: return (v, v) if isinstance(v, int) else tuple(v)


def im2col(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
  """(B, C, H, W) -> (B, C, k_h·k_w, H_out, W_out): every kernel tap's view of the padded input."""
  (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[2:], kernel, stride, padding
  ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
  if ho <= 0 or wo <= 0: raise ValueError(f"conv2d: a {kh}x{kw} kernel does not fit a {h}x{w} input with padding {padding}")
  xp = x.pad(((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
  taps = [xp[:, :, dy:dy + sh * (ho - 1) + 1:sh, dx:dx + sw * (wo - 1) + 1:sw] for dy in range(kh) for dx in range(kw)]
  return Tensor.stack(*taps, dim=2) if len(taps) > 1 else taps[0].unsqueeze(2)


def conv2d(x: Tensor, w: Tensor, bias: Tensor | None = None, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
           groups: int = 1, split: int = 1) -> Tensor:
  """x (B, C, H, W) * w (O, C/groups, k_h, k_w) -> (B, O, H_out, W_out), as x.conv2d(w, bias, groups, stride, padding=padding)
  computes it. `split` (dividing B) splits the weight gradient's reduction as the module docstring says."""
  (b, c, _, _), (o, cg, kh, kw) = x.shape, w.shape
  if c != cg * groups or o % groups: raise ValueError(f"conv2d: input has {c} channels, weight {tuple(w.shape)} with groups={groups}")
  if b % split: raise ValueError(f"conv2d: split {split} must divide the batch {b}")
  cols = im2col(x, (kh, kw), _pair(stride), _pair(padding))                        # (B, C, T, Ho, Wo)
  ho, wo = cols.shape[-2:]
  g, og, t = groups, o // groups, kh * kw
  cols = cols.reshape(split, b // split, g, 1, cg, t, ho, wo)
  wg = w.reshape(1, 1, g, og, cg, t, 1, 1)
  if split > 1: wg = wg.expand(split, 1, g, og, cg, t, 1, 1).contiguous_backward()
  y = (cols * wg).sum((4, 5)).reshape(b, o, ho, wo)
  return y if bias is None else y + bias.reshape(1, o, 1, 1)


def conv2d_gemm(x: Tensor, w: Tensor, bias: Tensor | None = None, stride: int | tuple[int, int] = 1,
                padding: int | tuple[int, int] = 0, split: int = 1) -> Tensor:
  """The same convolution (groups = 1) as two dense matrix products on a stored patch matrix:
  cols (B·Ho·Wo, C·k_h·k_w) is materialized once, channels last, so the forward (cols @ wᵀ), the input
  gradient (∂L/∂y @ w, then col2im) and the weight gradient (colsᵀ @ ∂L/∂y, split in `split` pieces along
  B·Ho·Wo) are each a plain GEMM over contiguous operands, the shape tinygrad's heuristic and tensor cores
  handle best. The price is the patch matrix's memory: B·Ho·Wo·C·k² numbers. As with any .contiguous() in
  tinygrad 0.14, take gradients before realizing the output: realizing y first stores the patch matrix as a
  plain buffer and ∂L/∂x stops there (zeros), while ∂L/∂w stays right. A training step (loss.backward()
  before anything is realized, as every project's TinyJit step does it) is not affected."""
  (b, c, _, _), (o, cg, kh, kw) = x.shape, w.shape
  if c != cg: raise ValueError(f"conv2d_gemm: input has {c} channels, weight {tuple(w.shape)} (groups are not supported here)")
  cols = im2col(x, (kh, kw), _pair(stride), _pair(padding))                        # (B, C, T, Ho, Wo)
  ho, wo = cols.shape[-2:]
  m, k = b * ho * wo, c * kh * kw
  if m % split: raise ValueError(f"conv2d_gemm: split {split} must divide B·Ho·Wo = {m}")
  cols = cols.permute(0, 3, 4, 1, 2).reshape(split, m // split, k).contiguous()   # stored: (S, M/S, K)
  wt = w.reshape(1, o, k).permute(0, 2, 1)                                          # (1, K, O)
  if split > 1: wt = wt.expand(split, k, o).contiguous_backward()
  y = (cols @ wt).reshape(b, ho, wo, o).permute(0, 3, 1, 2)
  return y if bias is None else y + bias.reshape(1, o, 1, 1)


def default_split(batch: int, outputs: int, reduction: int) -> int:
  """A split for the weight gradient: enough pieces that the first kernel has ~64k outputs, each piece
  still reducing over >= 256 numbers, and a divisor of the batch (1 when nothing is gained)."""
  want = max(1, min(65536 // max(outputs, 1), reduction // 256))
  for s in range(min(want, batch), 0, -1):
    if batch % s == 0: return s
  return 1


def upsample_nearest(x: Tensor, factor: int) -> Tensor:
  """(B, C, H, W) -> (B, C, factor·H, factor·W), each pixel repeated factor × factor times."""
  b, c, h, w = x.shape
  return x.reshape(b, c, h, 1, w, 1).expand(b, c, h, factor, w, factor).reshape(b, c, h * factor, w * factor)


def phase_taps(factor: int, kernel: int, padding: int) -> list[tuple[int, list[list[int]]]]:
  """For each output phase a = 0..factor-1 of a nearest-upsampled, stride-1 convolution along one axis, the
  low-resolution offset of its first tap and which of the kernel's taps each of its own taps sums:
      out[f·i + a] = Σ_t w[t] · x[⌊(f·i + a + t − p)/f⌋] = Σ_d (Σ_{t: ⌊(a + t − p)/f⌋ = d} w[t]) · x[i + d]
  (f=2, k=3, p=1: phase 0 reads x[i−1], x[i] with w0 and w1+w2; phase 1 reads x[i], x[i+1] with w0+w1 and w2)."""
  out = []
  for a in range(factor):
    d = [(a + t - padding) // factor for t in range(kernel)]
    out.append((d[0], [[t for t in range(kernel) if d[t] == dd] for dd in range(d[0], d[-1] + 1)]))
  return out


def upsample_conv2d(x: Tensor, w: Tensor, bias: Tensor | None, factor: int, padding: tuple[int, int], form: str = "gemm") -> Tensor:
  """conv2d(upsample_nearest(x, factor), w, padding) with "same" padding (2p = k − 1), computed on the small
  input: each of the factor² output phases is a convolution of x with a smaller kernel whose taps are sums of
  w's (`phase_taps`), and the phases are interleaved at the end. For the U-Net's 3×3 layers at factor 2 that is
  four 2×2 convolutions, 16 multiply-adds per input pixel and channel pair instead of 36, and no upsampled tensor
  nor its masked gradient windows. Each phase is computed in `form` (`conv_in_form`), the one `conv_form` picks for
  the upsampled layer: on a GPU the stored patches (H200, U-Net 128→128 at 14²→28², forward and both gradients,
  one call: 4.41 ms with `CONV_FORM=gemm DEV=CUDA python3 scripts/conv_bench.py --layers unet --only up --variants
  auto`, 8.23 with each phase in tinygrad's conv2d, 6.50 upsampling first, `… --variants gemm --gemm-splits 32`)."""
  (b, _, h, wd), (o, _, kh, kw) = x.shape, w.shape
  rows, cols = phase_taps(factor, kh, padding[0]), phase_taps(factor, kw, padding[1])
  phases = []
  for d0, row_taps in rows:
    for e0, col_taps in cols:
      # each tap of the phase's kernel sums a contiguous block of w's taps
      wp = Tensor.stack(*[Tensor.stack(*[w[:, :, rs[0]:rs[-1] + 1, cs[0]:cs[-1] + 1].sum((2, 3)) for cs in col_taps], dim=-1)
                          for rs in row_taps], dim=2)                                  # (O, C, n_h, n_w)
      nh, nw = wp.shape[2:]
      # pad (or crop) x so that a valid nh×nw convolution starting at offset (d0, e0) gives h×w outputs
      xp = x.pad(((0, 0), (0, 0), (max(-d0, 0), max(d0 + nh - 1, 0)), (max(-e0, 0), max(e0 + nw - 1, 0))))
      xp = xp[:, :, max(d0, 0):max(d0, 0) + h + nh - 1, max(e0, 0):max(e0, 0) + wd + nw - 1]
      # stored: fused into one kernel, every output would run all four phases' sums
      phases.append(conv_in_form(xp, wp, None, (1, 1), (0, 0), 1, form).contiguous())
  y = Tensor.stack(*phases, dim=0).reshape(factor, factor, b, o, h, wd).permute(2, 3, 4, 0, 5, 1)
  y = y.reshape(b, o, factor * h, factor * wd)
  return y if bias is None else y + bias.reshape(1, o, 1, 1)


def gemm_split(rows: int, outputs: int, device: str | None = None) -> int:
  """The weight gradient's split for conv2d_gemm: colsᵀ @ ∂L/∂y has `outputs` = C·k²·O numbers, each a sum
  over `rows` = B·Ho·Wo. On a GPU, up to 2,048 outputs tinygrad's heuristic already splits the sum itself (GROUPTOP),
  and a split of ours only gets in its way (1 -> 8 pieces: 0.29 -> 2.05 ms on the U-Net's input layer); above
  that, 32 pieces of >= 128 rows each were the fastest of 1, 8 and 32, or within 4 % of it, on every 3×3 layer
  we timed (H200). A CPU has no GROUPTOP: there every layer is split. Unsplit, the autoencoder's 32→3 upsampled
  last layer (864 outputs, sums of 16,384 rows at batch 16) was the step's slowest kernel at 2 GFLOP/s; split, the
  whole step took 181.6 ms against 213.2 at batch 16 and 1145.7 against 1657.5 ms at batch 128 (2-core CPU,
  `python3 scripts/profile_step.py --step ae --batch B --time N`)."""
  from tinygrad import Device
  if outputs <= 2048 and not _is_cpu(device or Device.DEFAULT): return 1
  for s in range(32, 1, -1):
    if rows % s == 0 and rows // s >= 128: return s
  return 1


def _is_cpu(device: str | tuple[str, ...]) -> bool:
  return (device[0] if isinstance(device, tuple) else device).split(":")[0] in ("CPU", "CLANG", "LLVM")


def conv_form(kernel: tuple[int, int], stride: tuple[int, int], upsample: int, groups: int, in_channels: int,
              device: str | None = None, weight_grad: bool = True, backward: bool = True, half: bool = False) -> str:
  """Which form `conv` computes a layer in, from measurements of forward + both gradients without BEAM
  (scripts/conv_bench.py per layer, scripts/step_bench.py per training step; docs/results.md has the tables):
    "conv2d"  tinygrad's own: grouped (depthwise) layers, and plain 1×1 layers, already one matrix product;
              on a GPU also stride-1 layers with fewer than 1,152 = 128·3·3 numbers per patch, where the
              stored patch matrix costs more traffic than its products save (H200: U-Net 64→64 at 28²
              2.15 ms against 2.45; the audio CNN's 16-64 channel step 9.2 ms against 11.7).
    "winograd" on a GPU, for training (a gradient taken, fp32): 3×3 stride-1 layers that are not upsampled, in
              tinygrad's own conv2d with its Winograd F(4×4, 3×3) (WINO=1 for that layer alone): 36 multiplies
              per 4×4 output tile and channel pair instead of 144, and autograd differentiates through the
              transforms. H200, forward and both gradients, one call: U-Net 64→64 at 28² 1.86 ms against
              2.13 as conv2d, 128→128 at 14² 1.23 against 2.19 as gemm, cuDNN 0.83 and 0.88 (`WINO=1 DEV=CUDA
              python3 scripts/conv_bench.py --layers unet --variants conv2d`, then without WINO=1 and with
              `--variants conv2d,gemm --gemm-splits 32 --torch`); with the tiles rule (MATVEC_FIX=1), the next
              call: 1.51 and 1.06 ms. Not in fp16
              (its transforms' fractions lose digits there) nor in inference (not measured); CONV_WINOGRAD=0
              turns it off, to compare.
    "gemm"    conv2d_gemm: everything else. On the H200 1.5-15x faster per layer than tinygrad's conv2d for
              strided, upsampled and wide layers (VGG 512→512 at 64²: 2.84 ms against 22.9), the one loss
              the autoencoder's last layer (32→3, upsampled: 0.87 ms against 0.80, and 0.53 as views). On the
              2-core CPU for every such layer, from whole steps: the autoencoder's batch-128 step 0.8 s against
              2.5 s, the U-Net's at batch 16 4.0 s against 11.1 s, the audio CNN's 0.74x, VGG's 0.96x.
  weight_grad=False (the weights are fixed and only ∂L/∂x is needed, as in style transfer's VGG) changes
  the GPU's answer for spatial kernels to "views": the stored patch matrix pays for itself in the weight
  gradient, and without one the VGG-19 512 px Adam step was faster with the patches read in place (H200,
  step_bench in one call: 42.1 ms as views, 51.3 ms with every layer as gemm; through tinygrad's conv2d,
  style_transfer.py --bench --conv direct, 130 ms in an earlier call).
  backward=False (inference: no gradient at all, as in the model zoo) with half=True (fp16) changes the GPU's answer
  to "gemm" for every layer with one group except the stride-1 1×1 ones (those and grouped layers stay tinygrad's
  conv2d): the products are plain matrix products that get tensor cores, which the views and conv2d forms of the
  3×3 layers did not (H200, model_zoo.py --bench, one call, fp16, batch 32: VGG-16 36.8 ms against 57.2 with the
  training rule, CONV_FORM=training, and 160 as views; ResNet-18 8.42 against 10.2; batch 1 ResNet-18 2.37 against
  2.15, the one loss). Whether the stride-1 1×1 layers should be stored too is open: all-gemm (CONV_FORM=gemm) made
  ResNet-50 12.6 ms against 17.6, and it is not measured for MobileNetV2 and EfficientNet-B0, whose 1×1 layers are
  most of their work. In fp32 the inference forward keeps the training rule: every layer as gemm was no faster
  (ResNet-18 batch 32 22.7 against 20.8 ms).
  CONV_FORM=gemm|views|conv2d|winograd in the environment forces one form (views: this module's im2col `conv2d`,
  which reads the patches as views instead of storing them), to compare them in a benchmark; CONV_FORM=training
  applies the training rule to inference too.
  On the Orin's GPU the GPU rule is expected to hold in direction, not in the factors (not measured)."""
  from tinygrad import Device
  forced = os.environ.get("CONV_FORM", "auto")
  if forced not in ("auto", "training", "gemm", "views", "conv2d", "winograd"):
    raise ValueError(f"CONV_FORM={forced!r}: use auto, training, gemm, views, conv2d or winograd")
  if groups > 1 and forced == "gemm": return "conv2d"
  if forced == "training": backward = True
  elif forced != "auto": return forced
  if groups > 1 or (kernel == (1, 1) and stride == (1, 1) and upsample == 1): return "conv2d"
  if _is_cpu(device or Device.DEFAULT): return "gemm"
  if not backward and half: return "gemm"
  if not weight_grad: return "views"
  if backward and kernel == (3, 3) and stride == (1, 1) and upsample == 1 and not half and os.environ.get("CONV_WINOGRAD", "1") != "0":
    return "winograd"
  return "gemm" if stride != (1, 1) or upsample > 1 or in_channels * kernel[0] * kernel[1] >= 1152 else "conv2d"


def conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
         groups: int = 1, upsample: int = 1, dilation: int | tuple[int, int] = 1, weight_grad: bool = True, backward: bool = True) -> Tensor:
  """The convolution every project calls: x.conv2d(weight, bias, ...) of the nearest-`upsample`x-upsampled x,
  computed in the form `conv_form` picks, with the weight gradient split by `gemm_split`. weight_grad=False
  says no gradient of `weight` will be taken (fixed weights), backward=False that no gradient at all will be
  (inference); either may change the form. An upsampled "same" convolution (stride 1, no groups, 2p = k − 1)
  runs as phase convolutions on the small input (`upsample_conv2d`); CONV_PHASES=0 upsamples first instead,
  to compare the two in a benchmark."""
  stride = _pair(stride)
  odd = (isinstance(padding, (tuple, list)) and len(padding) != 2) or _pair(dilation) != (1, 1)
  if odd: return (upsample_nearest(x, upsample) if upsample > 1 else x).conv2d(weight, bias, groups, stride, dilation, padding)
  kernel, padding = tuple(weight.shape[2:]), _pair(padding)
  form = conv_form(kernel, stride, upsample, groups, x.shape[1], weight_grad=weight_grad, backward=backward, half=x.dtype == dtypes.half)
  if upsample > 1:
    if (stride == (1, 1) and groups == 1 and all(2 * p == k - 1 for p, k in zip(padding, kernel))
        and os.environ.get("CONV_PHASES", "1") != "0"):
      return upsample_conv2d(x, weight, bias, upsample, padding, form)
    x = upsample_nearest(x, upsample)
  return conv_in_form(x, weight, bias, stride, padding, groups, form)


def conv_in_form(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], padding: tuple[int, int], groups: int,
                 form: str) -> Tensor:
  """The convolution in the named form: "conv2d" (tinygrad's own), "winograd" (tinygrad's own with its Winograd
  F(4×4, 3×3) for a 3×3 stride-1 kernel), "views" (`conv2d`) or "gemm" (`conv2d_gemm`)."""
  if form == "winograd" and tuple(weight.shape[2:]) == (3, 3) and stride == (1, 1):
    with Context(WINO=1): return x.conv2d(weight, bias, groups, 1, 1, padding)
  if form in ("conv2d", "winograd"): return x.conv2d(weight, bias, groups, stride, 1, padding)          # tinygrad's own conv2d
  (kh, kw), (ph, pw) = weight.shape[2:], padding
  ho, wo = (x.shape[2] + 2 * ph - kh) // stride[0] + 1, (x.shape[3] + 2 * pw - kw) // stride[1] + 1
  if form == "views":
    split = default_split(x.shape[0], math.prod(weight.shape), x.shape[0] * ho * wo) if stride != (1, 1) else 1
    return conv2d(x, weight, bias, stride, (ph, pw), groups, split)
  return conv2d_gemm(x, weight, bias, stride, (ph, pw), gemm_split(x.shape[0] * ho * wo, math.prod(weight.shape), x.device))


class Conv2d(nn.Conv2d):
  """nn.Conv2d (same parameters, init and state-dict keys), computed by `conv`. `layer(x, upsample=2)` is the
  convolution of the nearest-2x-upsampled x, the decoder step of an autoencoder or U-Net, in one call so the
  form can be chosen for it. `compute_dtype` (set by common.mixed.half_precision) computes the products in
  that dtype from fp32 weights and inputs, and returns x's dtype."""
  compute_dtype = None

  def __call__(self, x: Tensor, upsample: int = 1) -> Tensor:
    if self.compute_dtype is None:
      return conv(x, self.weight, self.bias, self.stride, self.padding, self.groups, upsample, self.dilation)
    y = conv(x.cast(self.compute_dtype), self.weight.cast(self.compute_dtype), None, self.stride, self.padding, self.groups, upsample,
             self.dilation).cast(x.dtype)
    return y if self.bias is None else y + self.bias.cast(x.dtype).reshape(1, -1, 1, 1)
