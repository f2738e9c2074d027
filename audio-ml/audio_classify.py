"""Log-mel spectrograms as matrix products on the GPU, and a small CNN sound classifier that really trains.

The whole audio pipeline runs in tinygrad, inside one TinyJit'd function per step:

    waveform ─► frames ─► windowed DFT (a matmul) ─► power ─► mel filterbank (a matmul) ─► log ─► CNN ─► class

1. Framing. A clip x of L samples (center=True pads n_fft/2 samples on each side by reflection)
   is cut into T = 1 + (L_padded − n_fft) // hop overlapping frames of n_fft samples:
       frame[t, n] = x[t·hop + n]                                          (B, T, n_fft)
   No per-frame Python loop: `--framing unfold` (default) and `hopsum` are pure views
   (reshape/shrink), `conv` lets a strided convolution do it, and `gather` indexes with an index
   tensor (the formulation the speed anchor measured at 44x cuFFT); it is kept for the benchmark.

2. Windowed DFT as a matrix product. For a real frame the DFT is
       X[t, k] = Σ_n w[n]·frame[t, n]·e^(−2πi·kn/N),   k = 0 … N/2        (N = n_fft, F = N/2 + 1 bins)
   Re X uses cos(2πkn/N), Im X uses −sin(2πkn/N); sin vanishes at k = 0 and k = N/2, so the N real
   numbers of a frame give exactly N real outputs: one basis matrix W (N, N) with the window folded in,
       [Re X_0 … Re X_N/2 | Im X_1 … Im X_N/2−1] = frame @ W               (B, T, N)
   With `conv` framing, W becomes N conv filters of width n_fft and stride hop: the DFT *is* a
   strided 1-D convolution. w is Hann (periodic, default), Hamming or rectangular, of length
   win_length ≤ n_fft, zero-padded to n_fft in the middle as librosa and torch do.

2b. The same DFT in two small matmuls (`--dft factored`, the default). The dense W costs 2·N² FLOPs
   per frame, ~23× an FFT's 5·N·log2 N at N = 512. One Cooley-Tukey split keeps most of the saving and stays
   two plain matrix products. Write N = N1·N2, n = N2·n1 + n2 and k = k1 + N1·k2. The term of nk
   that is a multiple of N drops out of the exponent, leaving
       X[k1 + N1·k2] = Σ_n2 e^(−2πi·n2·k2/N2) · e^(−2πi·n2·k1/N) · Σ_n1 x_w[N2·n1 + n2]·e^(−2πi·n1·k1/N1)
   stage 1 (inner sum): for every n2, a length-N1 DFT over n1: frames (B, T, N2, N1) @ (N1, 2·N1)
       [cos | −sin], real in, complex out.
   stage 2: the twiddle e^(−2πi·n2·k1/N) and a length-N2 DFT over n2, folded into one complex
       matrix per k1. A complex product is a real one on [Re | Im]: (a + ib)(P + iQ) =
       [a | b] @ [[P, Q], [−Q, P]], so (B, T, N1, 1, 2·N2) @ (N1, 2·N2, 2·K2).
       Only k ≤ N/2 is needed, so k2 stops at K2 = ⌊N/2 / N1⌋ + 1.
   The output comes in (k1, k2) order. The mel filterbank's rows are permuted to match once, in
   numpy, and rows with k > N/2 are zero, so nothing is transposed at run time.
   The cost is 4·N·(N1 + 2·K2) FLOPs per frame: 200 per sample for 512 = 32·16, against 1024 dense.
   The result is the same to rounding; tests check both forms against the rfft reference.

3. Power spectrum and mel filterbank:
       P[t, k] = |X[t, k]|^p    (p = 2 power, p = 1 magnitude)             (B, T, F)
       M[t, m] = Σ_k P[t, k]·fb[k, m]                                      (B, T, n_mels)
   fb holds triangles evenly spaced on the mel scale between fmin and fmax, built once in numpy:
       HTK:     mel(f) = 2595·log10(1 + f/700)
       Slaney:  mel(f) = f / (200/3) below 1 kHz, 15 + ln(f/1000) / (ln 6.4 / 27) above
   Slaney area normalisation scales triangle m by 2 / (f_right − f_left), so each has equal area.

4. Log with a floor:  ln(max(M, floor))  or in decibels  10·log10(max(M, floor)).  Out: (B, n_mels, T).

All of 1–4 is checked in tests/test_audio_ml.py against a float64 numpy reference written from the
formulas with np.fft.rfft (and librosa where installed) to torchaudio's own tolerance vs librosa,
atol 5e-4 / rtol 1e-5, for n_fft 256, 400, 512 and 1024, both mel scales and both norms.

The classifier: input BatchNorm, then blocks of [3×3 conv → BatchNorm → ReLU → 2×2 max-pool]
(widths 16, 32, 64 by default), global mean and max pooling over time (the coarse frequency axis is
kept: white and pink noise, or two vowels, differ in *where* their energy sits), dropout, one linear
layer to the classes. Loss: cross-entropy; optimizer: Adam with cosine learning-rate decay; optional
SpecAugment (`--specaugment`: one random band of < 8 mel channels and one random span of < 20 frames
per clip set to the clip's mean). Waveforms are also shifted (±0.1 clip) and scaled (±6 dB) at random.
Shapes at the defaults (8 kHz, 1 s, n_fft 256, win 200, hop 80, 40 mels): wave (B, 8000) → log-mel
(B, 40, 101) → (B, 16, 20, 50) → (B, 32, 10, 25) → (B, 64, 5, 12) → mean ‖ max over time (B, 640) → (B, classes).

Data:
  default      synthetic sounds, 10 classes (silence, tone, up/down chirp, AM tone, FM tone, white
               and pink noise, click train, square wave) with random pitch, modulation rate, onset, duration,
               level (−30 … −3 dBFS) and background noise 10–40 dB down. Nothing is downloaded.
  --data DIR   audio files labelled by sub-folder (DIR/dog/x.wav) or named {label}_{speaker}_{take}.wav
               (Free Spoken Digit Dataset; takes 0–4 are the test set, the customary split); other
               folders get a stratified 20 % test split. Any sample rate and channel count: mono
               mixdown, a windowed-sinc resampler written here in numpy, pad/crop to --clip-seconds,
               peak normalisation.

Run it (a Jetson: prefix NV=1; a laptop: as is, tinygrad picks its CPU or GPU):
  NV=1 python3 audio-ml/audio_classify.py                         # synthetic demo, checks >= 98 %
  python3 audio-ml/audio_classify.py --quick                      # tiny setting for tests; checks 80 %
  python3 audio-ml/audio_classify.py --data ../shared/data/fsdd --specaugment --steps 600 --save out/fsdd.safetensors
  python3 audio-ml/audio_classify.py --load out/fsdd.safetensors --file one.wav --visualize   # top-3 + PNG
  python3 audio-ml/audio_classify.py --load out/fsdd.safetensors --data ../shared/data/fsdd   # evaluate only
  NV=1 JITBEAM=2 python3 audio-ml/audio_classify.py --bench --json out/audio-ml/bench.json

--bench times the anchor workload (1 s at 16 kHz, n_fft 512, hop 160, 80 mels) in every framing and
with an fp16 DFT, the numpy rfft baseline, classification at batch 1 and 64 and the training step;
--cases picks groups (logmel, numpy, classify, train) when a JITBEAM search would take too long.

Flags worth trying: --dft dense (the one-matmul DFT of step 2), --framing (unfold / gather with
either DFT; conv / hopsum with --dft dense: same numbers, different kernels),
--mel-scale htk, --log db, --specaugment, --widths 8,16,32 (smaller, faster), --hop 160 (half the
frames), JITBEAM=2 (kernel search on the captured JIT). --help lists every flag with its default.

Results (measured on this code, seed 0; README.md has the commands, times and benchmark tables): on a
2-core x86 CPU the synthetic demo reached 100 % (1000/1000) held-out accuracy in its 800 steps (588 s;
500 steps gave 98.1 %, its errors tone <-> AM tone), and FSDD (customary split) 100 % (200/200) test
accuracy in 600 steps. Jetson Orin figures have not been measured: expect the training steps to run
several times faster than on a laptop CPU.
"""
from __future__ import annotations
import math, os, re, sys, time
from dataclasses import dataclass, asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a file: find common/ at the repo root
import common                                                   # before tinygrad: NV=1 -> DEV=NV, ...
from common import UserError, fail, check
from common.cli import positive_int, positive_float, nonnegative_float, int_list, existing_path

import numpy as np
from tinygrad import Tensor, TinyJit, nn, dtypes
from tinygrad.helpers import Context
from tinygrad.nn.state import get_state_dict, get_parameters

PROJECT = "audio-ml"
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".aiff", ".aif", ".au"}
FSDD_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<take>\d+)$")


# ================================================================================================
# 1-4. The log-mel front end
# ================================================================================================

@dataclass(frozen=True)
class MelConfig:
  sample_rate: int = 8000
  n_fft: int = 256
  win_length: int = 200        # 25 ms at 8 kHz; zero-padded to n_fft
  hop: int = 80                # 10 ms at 8 kHz
  window: str = "hann"         # hann | hamming | rect
  center: bool = True          # reflect-pad n_fft/2 at both ends so frame t is centred on sample t*hop
  power: float = 2.0           # 2: power spectrum, 1: magnitude
  n_mels: int = 40
  fmin: float = 20.0
  fmax: float | None = None    # None: sample_rate / 2
  mel_scale: str = "slaney"    # slaney | htk
  mel_norm: str = "slaney"     # slaney (equal-area triangles) | none
  log: str = "ln"              # ln | db | none
  log_floor: float = 1e-6

  def validate(self) -> "MelConfig":
    if self.n_fft % 2: fail(f"--n-fft {self.n_fft} must be even (the real DFT basis pairs cos and sin columns)")
    if not 0 < self.win_length <= self.n_fft: fail(f"--win-length {self.win_length} must be between 1 and --n-fft {self.n_fft}")
    if self.hop > self.n_fft: fail(f"--hop {self.hop} must not exceed --n-fft {self.n_fft} (samples would be skipped)")
    fmax = self.sample_rate / 2 if self.fmax is None else self.fmax
    if not 0 <= self.fmin < fmax <= self.sample_rate / 2:
      fail(f"need 0 <= --fmin ({self.fmin:g}) < --fmax ({fmax:g}) <= sample_rate/2 ({self.sample_rate / 2:g})")
    if self.n_mels > self.n_fft // 2 + 1: fail(f"--n-mels {self.n_mels} exceeds the {self.n_fft // 2 + 1} DFT bins of --n-fft {self.n_fft}")
    return self

  @property
  def n_freqs(self) -> int: return self.n_fft // 2 + 1

  def n_frames(self, n_samples: int) -> int:
    padded = n_samples + (2 * (self.n_fft // 2) if self.center else 0)
    return 1 + (padded - self.n_fft) // self.hop


def window(cfg: MelConfig) -> np.ndarray:
  """Periodic window of win_length (the DFT-friendly form, as torch.hann_window and librosa use),
  zero-padded in the middle of n_fft."""
  n = np.arange(cfg.win_length)
  w = {"hann": 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length),
       "hamming": 0.54 - 0.46 * np.cos(2 * np.pi * n / cfg.win_length),
       "rect": np.ones(cfg.win_length)}[cfg.window]
  left = (cfg.n_fft - cfg.win_length) // 2
  return np.pad(w, (left, cfg.n_fft - cfg.win_length - left))


def dft_basis(cfg: MelConfig) -> np.ndarray:
  """W (n_fft, n_fft): frame @ W = [Re X_0..Re X_{N/2} | Im X_1..Im X_{N/2-1}], window folded in."""
  N = cfg.n_fft
  n = np.arange(N)[:, None]
  angle_re = 2 * np.pi * n * np.arange(N // 2 + 1)[None, :] / N
  angle_im = 2 * np.pi * n * np.arange(1, N // 2)[None, :] / N
  w = window(cfg)[:, None]
  return np.concatenate([w * np.cos(angle_re), -w * np.sin(angle_im)], axis=1)


def dft_factors(n: int) -> tuple[int, int]:
  """N = N1·N2 with N1 the divisor nearest above sqrt(N) (512 = 32·16, 400 = 20·20, 256 = 16·16)."""
  n1 = next(d for d in range(math.isqrt(n), n + 1) if n % d == 0 and d * d >= n)
  if n1 == n: raise UserError(f"--n-fft {n} is prime: the factored DFT needs N = N1·N2 (use --dft dense)")
  return n1, n // n1


def factored_dft_bases(cfg: MelConfig, n1: int, n2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The two stage matrices of one Cooley-Tukey split, and the mel filterbank with its rows put in
  the (k1, k2) order the second stage writes (k = k1 + N1·k2; rows with k > N/2 are zero)."""
  N = cfg.n_fft
  K2 = (N // 2) // n1 + 1                             # k2 = 0 … K2-1 reaches every k ≤ N/2
  k1 = np.arange(n1)
  a1 = 2 * np.pi * np.outer(np.arange(n1), k1) / n1                                # (n1, k1)
  stage1 = np.concatenate([np.cos(a1), -np.sin(a1)], axis=1)                       # (N1, 2·N1)
  k = k1[:, None, None] + n1 * np.arange(K2)[None, None, :]                        # (N1, 1, K2)
  a2 = 2 * np.pi * np.arange(n2)[None, :, None] * k / N                            # (N1, N2, K2)
  P, Q = np.cos(a2), -np.sin(a2)                                                   # e^(-i·a2) = P + iQ
  # (a + ib)(P + iQ) = (aP - bQ) + i(aQ + bP): [a | b] @ [[P, Q], [-Q, P]]
  stage2 = np.concatenate([np.concatenate([P, Q], axis=2), np.concatenate([-Q, P], axis=2)], axis=1)
  fb = mel_filterbank(cfg)                                                          # (F, n_mels)
  fb_k = np.zeros((n1 * K2, fb.shape[1]))
  kk = k.reshape(n1, K2)
  fb_k[(kk <= N // 2).reshape(-1)] = fb[kk[kk <= N // 2]]
  return stage1, stage2, fb_k                         # (N1, 2·N1), (N1, 2·N2, 2·K2), (N1·K2, n_mels)


def hz_to_mel(f, scale: str):
  f = np.asarray(f, dtype=np.float64)
  if scale == "htk": return 2595.0 * np.log10(1.0 + f / 700.0)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0      # Slaney's Auditory Toolbox
  return np.where(f < min_log_hz, f / f_sp, min_log_hz / f_sp + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep)


def mel_to_hz(m, scale: str):
  m = np.asarray(m, dtype=np.float64)
  if scale == "htk": return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
  min_log_mel = min_log_hz / f_sp
  return np.where(m < min_log_mel, m * f_sp, min_log_hz * np.exp(logstep * (m - min_log_mel)))


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
  """fb (n_freqs, n_mels): triangle m rises from f[m] to f[m+1] and falls to f[m+2], where the
  n_mels + 2 edges f are evenly spaced in mel between fmin and fmax."""
  fmax = cfg.sample_rate / 2 if cfg.fmax is None else cfg.fmax
  bin_hz = np.linspace(0, cfg.sample_rate / 2, cfg.n_freqs)                         # (F,)
  edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin, cfg.mel_scale), hz_to_mel(fmax, cfg.mel_scale), cfg.n_mels + 2), cfg.mel_scale)
  left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]         # (n_mels, 1) each
  rising = (bin_hz[None, :] - left) / (centre - left)
  falling = (right - bin_hz[None, :]) / (right - centre)
  fb = np.maximum(0.0, np.minimum(rising, falling))                                   # (n_mels, F)
  if cfg.mel_norm == "slaney": fb *= 2.0 / (right - left)
  return fb.T


class LogMel:
  """wave (B, L) -> log-mel (B, n_mels, T). `framing` chooses how frames reach the DFT matmul."""
  FRAMINGS = ("conv", "unfold", "hopsum", "gather")

  def __init__(self, cfg: MelConfig, framing: str = "conv", dft_dtype=dtypes.float32, dft: str = "dense"):
    self.cfg, self.framing, self.dft_dtype, self.dft = cfg.validate(), framing, dft_dtype, dft
    if dft == "factored":
      if framing not in ("unfold", "gather"): raise UserError(f"the factored DFT takes frames by unfold or gather, not {framing}")
      self.n1, self.n2 = dft_factors(cfg.n_fft)
      stage1, stage2, fb = factored_dft_bases(cfg, self.n1, self.n2)
      self.window = Tensor(window(cfg).astype(np.float32)).cast(dft_dtype).realize()                   # (N,)
      self.stage1 = Tensor(stage1.astype(np.float32)).cast(dft_dtype).realize()                         # (N1, 2·N1)
      self.stage2 = Tensor(stage2.astype(np.float32)).cast(dft_dtype).realize()                         # (N1, 2·N2, 2·K2)
      self.fb = Tensor(fb.astype(np.float32)).realize()                                                 # (N1·K2, n_mels)
      return
    self.basis = Tensor(dft_basis(cfg).astype(np.float32)).cast(dft_dtype).contiguous().realize()       # (N, N)
    self.fb = Tensor(mel_filterbank(cfg).astype(np.float32)).realize()                                  # (F, n_mels)

  def frames(self, x: Tensor) -> Tensor:
    """(B, L) padded clip -> (B, T, N) frames: a view of x (unfold: repeat + shrink + reshape, no copy)
    or an index tensor (T, N) (gather: the frames are written out)."""
    N, hop = self.cfg.n_fft, self.cfg.hop
    if self.framing == "unfold": return x.unfold(1, N, hop)
    T = 1 + (x.shape[1] - N) // hop
    return x[:, Tensor.arange(T).reshape(T, 1) * hop + Tensor.arange(N).reshape(1, N)]

  def padded(self, wave: Tensor) -> Tensor:
    """(B, L) -> (B, L + n_fft) in the DFT's dtype: n_fft/2 reflected samples at each end when centring."""
    x = wave.cast(self.dft_dtype)
    return x.pad(((0, 0), (self.cfg.n_fft // 2, self.cfg.n_fft // 2)), mode="reflect") if self.cfg.center else x

  def factored_power(self, wave: Tensor) -> Tensor:
    """(B, L) -> |X|^p (B, T, N1·K2) in the (k1, k2) order of the Cooley-Tukey split (see the docstring)."""
    cfg, N1, N2 = self.cfg, self.n1, self.n2
    frames = self.frames(self.padded(wave)) * self.window                                              # (B, T, N), n = n1·N2 + n2
    B, T, _ = frames.shape
    # stage 1: a length-N1 DFT over n1 for every n2                                   (B, T, N2, N1) @ (N1, 2·N1)
    y = frames.reshape(B, T, N1, N2).transpose(2, 3).matmul(self.stage1, dtype=dtypes.float32)
    # regroup by k1: [Re Y(k1, n2) over n2 | Im Y(k1, n2) over n2]                    (B, T, N1, 1, 2·N2)
    y = y.reshape(B, T, N2, 2, N1).permute(0, 1, 4, 3, 2).reshape(B, T, N1, 1, 2 * N2).cast(self.dft_dtype)
    # stage 2: twiddle and a length-N2 DFT over n2, one complex matrix per k1         (N1, 2·N2, 2·K2)
    z = y.matmul(self.stage2, dtype=dtypes.float32).reshape(B, T, N1, -1)               # (B, T, N1, 2·K2)
    K2 = z.shape[-1] // 2
    power = (z[..., :K2].square() + z[..., K2:].square()).reshape(B, T, N1 * K2)
    return (power.sqrt() if cfg.power == 1 else power).contiguous()

  def spectrum(self, wave: Tensor) -> Tensor:
    """(B, L) -> [Re | Im] (B, T, N), float32 accumulation whatever dft_dtype is."""
    N, hop = self.cfg.n_fft, self.cfg.hop
    x = self.padded(wave)
    B, L = x.shape
    T = 1 + (L - N) // hop
    if self.framing == "conv":        # N filters of width N, stride hop: the DFT as a strided conv1d
      filters = self.basis.T.reshape(N, 1, 1, N)
      return x.reshape(B, 1, 1, L).conv2d(filters, stride=(1, hop), dtype=dtypes.float32).reshape(B, N, T).transpose(1, 2)
    if self.framing in ("unfold", "gather"): return self.frames(x).matmul(self.basis, dtype=dtypes.float32)
    if self.framing == "hopsum":      # x as (B, L/hop, hop) chunks: frame t = chunks t..t+Q-1, so
      Q = -(-N // hop)                # X = Σ_q chunks[:, q:q+T] @ W[q*hop:(q+1)*hop]  (W zero-padded to Q*hop rows)
      need = (T + Q - 1) * hop
      chunks = (x.pad(((0, 0), (0, need - L))) if need >= L else x[:, :need]).reshape(B, T + Q - 1, hop)
      W = self.basis.pad(((0, Q * hop - N), (0, 0)))
      return sum(chunks[:, q:q + T].matmul(W[q * hop:(q + 1) * hop], dtype=dtypes.float32) for q in range(Q))
    raise ValueError(f"unknown framing {self.framing!r}")

  def power(self, wave: Tensor) -> Tensor:
    """|X|^p (B, T, F): Re² for k = 0..N/2 plus Im² for k = 1..N/2-1 (zero at both ends)."""
    F = self.cfg.n_freqs
    spec = self.spectrum(wave)
    power = spec[:, :, :F].square() + spec[:, :, F:].square().pad(((0, 0), (0, 0), (1, 1)))
    # materialized on purpose: left lazy, tinygrad fuses it into the mel matmul, which then recomputes
    # every power value once per mel band (186 of 805 µs on the H200 without BEAM, 64 clips)
    return (power.sqrt() if self.cfg.power == 1 else power).contiguous()

  def mel(self, wave: Tensor) -> Tensor:
    power = self.factored_power(wave) if self.dft == "factored" else self.power(wave)
    return power.matmul(self.fb).transpose(1, 2)                            # (B, n_mels, T)

  def __call__(self, wave: Tensor) -> Tensor:
    mel = self.mel(wave)
    if self.cfg.log == "ln": return mel.maximum(self.cfg.log_floor).log()
    if self.cfg.log == "db": return mel.maximum(self.cfg.log_floor).log10() * 10
    return mel


# ================================================================================================
# Audio in: mono mixdown, resampling, fixed length
# ================================================================================================

def resample(x: np.ndarray, sr_in: int, sr_out: int, zero_crossings: int = 16, rolloff: float = 0.94) -> np.ndarray:
  """Band-limited resampling by a Kaiser-windowed sinc: y(t_j) = Σ_n x[n]·h(t_j − n), t_j = j·sr_in/sr_out,
  h(τ) = 2c·sinc(2c·τ)·kaiser(τ / half_width), c = rolloff·min(sr_in, sr_out)/2 / sr_in (cycles/sample).
  The low-pass at c sits below both Nyquist frequencies, so nothing above the new one aliases."""
  if sr_in == sr_out: return x.astype(np.float32)
  c = rolloff * min(sr_in, sr_out) / 2 / sr_in
  half_width = zero_crossings / (2 * c)                                     # input samples each side
  n_out = int(round(len(x) * sr_out / sr_in))
  beta = 8.6                                                                # ≈ 80 dB stop-band
  offsets = np.arange(-math.ceil(half_width), math.ceil(half_width) + 1)
  y = np.empty(n_out, dtype=np.float64)
  for start in range(0, n_out, 4096):                                       # chunks bound the (outputs, taps) matrix
    t = np.arange(start, min(start + 4096, n_out)) * (sr_in / sr_out)
    taps = np.floor(t)[:, None].astype(np.int64) + offsets[None, :]         # (chunk, taps)
    tau = t[:, None] - taps
    h = 2 * c * np.sinc(2 * c * tau) * np.i0(beta * np.sqrt(np.clip(1 - (tau / half_width) ** 2, 0, 1))) / np.i0(beta)
    valid = (taps >= 0) & (taps < len(x))
    y[start:start + len(t)] = (np.where(valid, x[np.clip(taps, 0, len(x) - 1)], 0.0) * h).sum(1)
  return y.astype(np.float32)


def fix_length(x: np.ndarray, n: int) -> np.ndarray:
  return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def load_audio(path: str | Path, sample_rate: int, n_samples: int, peak_normalize: bool = True) -> np.ndarray:
  """Any file libsndfile reads -> float32 (n_samples,) mono at sample_rate; one-line errors."""
  import soundfile as sf
  p = Path(path)
  if not p.is_file(): fail(f"audio {p}: no such file")
  try: data, sr = sf.read(str(p), dtype="float32", always_2d=True)      # (frames, channels)
  except Exception as e: fail(f"audio {p} cannot be read ({' '.join(str(e).split())[:120] or type(e).__name__})")
  if data.shape[0] == 0: fail(f"audio {p} is empty")
  mono = data.mean(axis=1)
  peak = float(np.abs(mono).max())
  if not np.isfinite(peak): fail(f"audio {p} contains NaN or infinite samples")
  if peak < 1e-4: fail(f"audio {p} is silent (peak {peak:.1e}, below -80 dBFS)")
  x = fix_length(resample(mono, sr, sample_rate), n_samples)
  return x / np.abs(x).max() * 0.9 if peak_normalize and np.abs(x).max() > 0 else x


# ================================================================================================
# Built-in data: synthetic sound classes
# ================================================================================================

SYNTH_CLASSES = ("silence", "tone", "chirp_up", "chirp_down", "am_tone", "fm_tone",
                 "white_noise", "pink_noise", "click_train", "square_wave")


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
  """1/f noise: white noise shaped by 1/sqrt(f) in the frequency domain."""
  spec = np.fft.rfft(rng.standard_normal(n))
  spec[1:] /= np.sqrt(np.arange(1, len(spec)))
  spec[0] = 0
  x = np.fft.irfft(spec, n)
  return x / (x.std() + 1e-12)


def synth_event(kind: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """One sound of `kind`, n samples (its level is set by the caller)."""
  t = np.arange(n) / sr
  loguni = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
  if kind == "tone": return np.sin(2 * np.pi * loguni(150, 3000) * t + rng.uniform(0, 2 * np.pi))
  if kind in ("chirp_up", "chirp_down"):           # exponential sweep over at least an octave
    f0 = loguni(150, 900)
    f1 = f0 * loguni(2, min(8, 3500 / f0))
    if kind == "chirp_down": f0, f1 = f1, f0
    dur = n / sr
    phase = 2 * np.pi * f0 * dur / np.log(f1 / f0) * (np.exp(t / dur * np.log(f1 / f0)) - 1)
    return np.sin(phase)
  if kind == "am_tone":
    depth, rate = rng.uniform(0.7, 1.0), rng.uniform(6, 16)
    return (1 - depth * 0.5 * (1 + np.cos(2 * np.pi * rate * t))) * np.sin(2 * np.pi * loguni(200, 3000) * t)
  if kind == "fm_tone":
    fc, rate = loguni(300, 2500), rng.uniform(4, 10)
    dev = rng.uniform(0.08, 0.2) * fc
    return np.sin(2 * np.pi * fc * t + dev / rate * np.sin(2 * np.pi * rate * t))
  if kind == "white_noise": return rng.standard_normal(n)
  if kind == "pink_noise": return pink(rng, n)
  if kind == "click_train":
    x, period = np.zeros(n), int(sr / rng.uniform(4, 30))
    x[rng.integers(0, period)::period] = 1.0
    return x * np.sqrt(period)
  if kind == "square_wave":                          # band-limited: odd harmonics below Nyquist
    f0 = loguni(100, 800)
    ks = np.arange(1, int(sr / 2 / f0), 2)
    return 4 / np.pi * (np.sin(2 * np.pi * f0 * t[None, :] * ks[:, None]) / ks[:, None]).sum(0)
  raise ValueError(kind)


def synth_clip(label: int, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """Background noise (−70 … −40 dBFS, white or pink) plus, except for silence, an event of random
  onset, duration (0.4 of the clip … all of it) and level (−30 … −3 dBFS, at least 10 dB above the background)."""
  db = lambda v: 10 ** (v / 20)
  event_db = rng.uniform(-30, -3)
  bg_db = rng.uniform(-70, -40) if label == 0 else min(rng.uniform(-70, -40), event_db - rng.uniform(10, 40))
  x = db(bg_db) * (rng.standard_normal(n) if rng.random() < 0.5 else pink(rng, n))
  if label == 0: return x.astype(np.float32)
  length = int(rng.uniform(0.4, 1.0) * n)           # >= 2 cycles of the slowest AM/FM
  onset = int(rng.integers(0, n - length + 1))
  event = synth_event(SYNTH_CLASSES[label], rng, length, sr)
  ramp = min(int(0.01 * sr), length // 2)                                   # 10 ms fades: no clicks at the edges
  env = np.ones(length); env[:ramp] = np.linspace(0, 1, ramp); env[length - ramp:] = np.linspace(1, 0, ramp)
  x[onset:onset + length] += db(event_db) * event / (np.sqrt(np.mean(event ** 2)) + 1e-12) * env
  return x.astype(np.float32)


def synth_dataset(n_clips: int, rng: np.random.Generator, n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
  labels = np.arange(n_clips) % len(SYNTH_CLASSES)                         # balanced
  rng.shuffle(labels)
  return np.stack([synth_clip(int(y), rng, n, sr) for y in labels]), labels.astype(np.int32)


# ================================================================================================
# Real data: a folder of labelled audio files
# ================================================================================================

def scan_folder(root: Path) -> tuple[list[tuple[Path, str]], str]:
  """-> [(file, label)], and how labels were found: 'sub-folder' or 'file name'."""
  if not root.is_dir(): fail(f"--data {root}: not a folder")
  files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
  if not files: fail(f"--data {root}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
  nested = [p for p in files if p.parent != root]
  if nested: return [(p, p.relative_to(root).parts[0]) for p in nested], "sub-folder"
  named = [(p, m["label"]) for p in files if (m := FSDD_NAME.match(p.stem))]
  if len(named) < len(files):
    bad = next(p for p in files if not FSDD_NAME.match(p.stem))
    fail(f"--data {root}: {bad.name} is neither in a class sub-folder nor named {{label}}_{{speaker}}_{{take}}")
  return named, "file name"


def split_files(items: list[tuple[Path, str]], how: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
  """Boolean test mask. FSDD names: takes 0-4 are the test set (the customary split);
  otherwise a stratified split holding out 20 % of each class (at least one file)."""
  if how == "file name":
    return np.array([int(FSDD_NAME.match(p.stem)["take"]) < 5 for p, _ in items]), "customary FSDD split: takes 0-4 test"
  labels = np.array([lab for _, lab in items])
  test = np.zeros(len(items), bool)
  for lab in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == lab))
    if len(idx) < 2: fail(f"class {lab!r} has only one file: cannot hold one out for testing")
    test[idx[:max(1, round(0.2 * len(idx)))]] = True
  return test, "stratified split: 20 % of each class test"


def load_folder(root: Path, cfg: MelConfig, n_samples: int, rng: np.random.Generator):
  items, how = scan_folder(root)
  labels = sorted({lab for _, lab in items})
  if len(labels) < 2: fail(f"--data {root}: only one class ({labels[0]!r}); a classifier needs at least two")
  test_mask, split_name = split_files(items, how, rng)
  waves = np.stack([load_audio(p, cfg.sample_rate, n_samples) for p, _ in common.progress(items, desc="loading audio")])
  y = np.array([labels.index(lab) for _, lab in items], np.int32)
  print(f"data: {len(items)} files in {len(labels)} classes labelled by {how}; {split_name} -> "
        f"{(~test_mask).sum()} train / {test_mask.sum()} test")
  return waves[~test_mask], y[~test_mask], waves[test_mask], y[test_mask], labels


# ================================================================================================
# The classifier
# ================================================================================================

class AudioCNN:
  """[conv 3×3 → BatchNorm → ReLU → max-pool 2×2] × len(widths), then global mean and max pooling over
  time. The coarse frequency axis is kept: a conv is blind to *where* in frequency a pattern sits, and
  white vs pink noise, or one vowel vs another, differ exactly in that."""
  def __init__(self, n_classes: int, widths: list[int], n_mels: int):
    self.input_norm = nn.BatchNorm2d(1)        # log-mel levels are far from zero mean / unit variance
    chans = [1] + list(widths)
    self.convs = [nn.Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(chans, chans[1:])]
    self.norms = [nn.BatchNorm2d(b) for b in widths]
    self.head = nn.Linear(2 * widths[-1] * (n_mels >> len(widths)), n_classes)

  def __call__(self, logmel: Tensor) -> Tensor:
    x = self.input_norm(logmel.unsqueeze(1))                            # (B, 1, n_mels, T)
    for conv, norm in zip(self.convs, self.norms):
      x = norm(conv(x)).relu().max_pool2d(2)                            # halve frequency and time
    x = x.mean(axis=3).cat(x.max(axis=3), dim=1).flatten(1)             # pool over time: (B, 2·C·F')
    return self.head(x.dropout(0.2))                                    # logits (B, n_classes)


def spec_augment(logmel: Tensor, max_freq: int = 8, max_time: int = 20) -> Tensor:
  """SpecAugment-style masking: per clip, one random band of < max_freq mel channels and one random
  span of < max_time frames are set to the clip's mean (random numbers drawn inside the JIT)."""
  B, M, T = logmel.shape
  def band(size: int, max_width: int) -> Tensor:
    width = (Tensor.rand(B, 1) * max_width).floor()
    start = (Tensor.rand(B, 1) * (size - width)).floor()
    pos = Tensor.arange(size).reshape(1, size)
    return (pos >= start) & (pos < start + width)                       # (B, size)
  masked = band(M, max_freq).reshape(B, M, 1) | band(T, max_time).reshape(B, 1, T)
  return masked.where(logmel.mean(axis=(1, 2), keepdim=True), logmel)


# ================================================================================================
# Training and evaluation
# ================================================================================================

def augment(waves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Waveform augmentation in numpy: random circular shift of up to ±0.1 of the clip and gain ±6 dB."""
  n = waves.shape[1]
  shifts = rng.integers(-n // 10, n // 10 + 1, len(waves))
  gains = 10 ** (rng.uniform(-6, 6, (len(waves), 1)) / 20)
  return np.stack([np.roll(w, s) for w, s in zip(waves, shifts)]) * gains


def make_predict(frontend: LogMel, model: AudioCNN):
  @TinyJit
  def predict(wave: Tensor) -> Tensor:
    return model(frontend(wave)).softmax().realize()                       # (B, classes)
  return predict


def predict_all(predict, waves: np.ndarray, batch: int) -> np.ndarray:
  """Class probabilities for every clip, in fixed-size batches so the JIT replays (last one padded)."""
  out = []
  for i in range(0, len(waves), batch):
    chunk = waves[i:i + batch]
    padded = np.concatenate([chunk, np.zeros((batch - len(chunk), waves.shape[1]), np.float32)]) if len(chunk) < batch else chunk
    out.append(predict(Tensor(padded.astype(np.float32))).numpy()[:len(chunk)])
  return np.concatenate(out)


def train(frontend, model, x_train, y_train, x_test, y_test, args, rng):
  params = get_parameters(model)
  opt = nn.optim.Adam(params, lr=args.lr)

  @TinyJit
  def train_step(wave: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    with Context(TRAINING=1):
      opt.zero_grad()
      feats = frontend(wave)                                                # log-mel on the device, no grad
      if args.specaugment: feats = spec_augment(feats)
      logits = model(feats)
      loss = logits.sparse_categorical_crossentropy(labels)
      loss.backward()
      opt.step()
      return loss.realize(), (logits.argmax(-1) == labels).mean().realize()

  predict = make_predict(frontend, model)
  history = {"step": [], "loss": [], "train_acc": [], "eval_step": [], "test_acc": []}
  eval_every = max(1, args.steps // 8)
  order, pos = rng.permutation(len(x_train)), 0
  bar = common.progress(range(args.steps), total=args.steps, desc="train")
  t0 = time.perf_counter()
  for step in bar:
    if pos + args.batch > len(order): order, pos = rng.permutation(len(x_train)), 0   # next epoch
    idx = order[pos:pos + args.batch]; pos += args.batch
    lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))              # cosine decay to 0
    opt.lr.assign(Tensor([lr], device=opt.lr.device, dtype=opt.lr.dtype)).realize()
    loss, acc = train_step(Tensor(augment(x_train[idx], rng).astype(np.float32)), Tensor(y_train[idx]))
    history["step"].append(step); history["loss"].append(loss.item()); history["train_acc"].append(acc.item())
    if (step + 1) % eval_every == 0 or step + 1 == args.steps:
      test_acc = float((predict_all(predict, x_test, args.batch).argmax(1) == y_test).mean())
      history["eval_step"].append(step + 1); history["test_acc"].append(test_acc)
      bar.set_description(f"train loss {history['loss'][-1]:.3f} test acc {100 * test_acc:.1f}%")
      if bar.disable: print(f"step {step + 1}/{args.steps}: loss {np.mean(history['loss'][-eval_every:]):.3f}, "
                            f"held-out accuracy {100 * test_acc:.1f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
  return history, time.perf_counter() - t0, predict


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
  m = np.zeros((n, n), np.int64)
  np.add.at(m, (y_true, y_pred), 1)
  return m


# ================================================================================================
# Pictures
# ================================================================================================

def plot_training(history: dict, dest: Path) -> None:
  from common.plots import figure, save_figure, moving_average
  fig, (ax_loss, ax_acc) = figure(1, 2, size=(10, 3.6))
  ax_loss.plot(history["step"], history["loss"], alpha=0.35, lw=1, label="train loss")
  ax_loss.plot(history["step"], moving_average(history["loss"], 20), lw=2, label="20-step mean")
  ax_loss.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="loss"); ax_loss.legend(fontsize=8)
  ax_acc.plot(history["step"], 100 * moving_average(history["train_acc"], 20), label="train (20-step mean)")
  ax_acc.plot(history["eval_step"], 100 * np.array(history["test_acc"]), "o-", label="held-out")
  ax_acc.set(xlabel="step", ylabel="accuracy %", ylim=(0, 101), title="accuracy"); ax_acc.legend(fontsize=8)
  for ax in (ax_loss, ax_acc): ax.grid(alpha=0.3)
  save_figure(fig, dest)


def plot_clips(dest: Path, waves: np.ndarray, names: list[str], logmels: np.ndarray, probs: np.ndarray,
               labels: list[str], sr: int, hop: int) -> None:
  """One row per clip: waveform | log-mel | class probabilities."""
  from common.plots import figure, save_figure
  fig, axes = figure(len(waves), 3, size=(13, 2.6 * len(waves)), squeeze=False)
  for row, (w, name, lm, p) in enumerate(zip(waves, names, logmels, probs)):
    a_wave, a_mel, a_prob = axes[row]
    a_wave.plot(np.arange(len(w)) / sr, w, lw=0.5); a_wave.set(title=name, xlabel="s")
    a_mel.imshow(lm, origin="lower", aspect="auto", extent=(0, lm.shape[1] * hop / sr, 0, lm.shape[0]), cmap="magma")
    a_mel.set(title="log-mel", xlabel="s", ylabel="mel channel")
    a_prob.barh(range(len(labels)), p, color=["C1" if i == p.argmax() else "C0" for i in range(len(labels))])
    a_prob.set(yticks=range(len(labels)), xlim=(0, 1), title=f"→ {labels[int(p.argmax())]} ({100 * p.max():.1f} %)")
    a_prob.set_yticklabels(labels, fontsize=7)
  save_figure(fig, dest)


# ================================================================================================
# --bench
# ================================================================================================

def numpy_logmel(waves: np.ndarray, cfg: MelConfig, fb: np.ndarray) -> np.ndarray:
  """The CPU baseline: float32 numpy, strided frames and np.fft.rfft."""
  N = cfg.n_fft
  x = np.pad(waves, ((0, 0), (N // 2, N // 2)), mode="reflect") if cfg.center else waves
  frames = np.lib.stride_tricks.sliding_window_view(x, N, axis=1)[:, ::cfg.hop]     # (B, T, N) view
  power = np.abs(np.fft.rfft(frames * window(cfg).astype(np.float32), axis=-1)) ** 2
  return np.log(np.maximum(power.astype(np.float32) @ fb, cfg.log_floor)).transpose(0, 2, 1)


def bench(args) -> int:
  from common.bench import Bench
  b = Bench(PROJECT)
  quick = args.quick
  big = 8 if quick else 64
  iters = dict(warmup=2, iters=3, max_seconds=2.0) if quick else dict(warmup=3, iters=20, min_seconds=1.0, max_seconds=20.0)
  # the anchor's workload: 1 s at 16 kHz, n_fft 512, hop 160, 80 mels
  cfg = MelConfig(sample_rate=16000, n_fft=512, win_length=512, hop=160, n_mels=80, fmin=0.0, mel_scale="htk", mel_norm="none")
  rng = np.random.default_rng(args.seed)
  clips = {n: rng.standard_normal((n, cfg.sample_rate)).astype(np.float32) * 0.1 for n in (1, big)}
  device_clips = {n: Tensor(c).realize() for n, c in clips.items()}
  frontends = {f: LogMel(cfg, f) for f in LogMel.FRAMINGS}       # same numbers, different kernels
  factored = {f: LogMel(cfg, f, dft="factored") for f in ("unfold", "gather")}
  fb = mel_filterbank(cfg).astype(np.float32)
  def logmel_case(name, frontend, n, tf32=False):
    # ALLOW_TF32 is read when kernels compile, so the context spans the JIT's capture (and any BEAM search)
    with Context(ALLOW_TF32=int(tf32)):
      jit = TinyJit(lambda x: frontend(x).realize())
      rec = b.run(f"{name} b={n}", lambda: jit(device_clips[n]), rate=(n, "clips/s"), **iters, audio_s_per_call=n * 1.0)
      # what the speed costs in accuracy: the largest log-mel difference from numpy's rfft
      rec["max_abs_err_vs_numpy"] = float(np.abs(jit(device_clips[n]).numpy() - numpy_logmel(clips[n], cfg, fb)).max())
  if "logmel" in args.cases:
    logmel_case("log-mel conv", frontends["conv"], 1)
    logmel_case("log-mel unfold factored", factored["unfold"], 1)
    for framing in (("conv",) if quick else LogMel.FRAMINGS): logmel_case(f"log-mel {framing}", frontends[framing], big)
    for framing in (("unfold",) if quick else ("unfold", "gather")): logmel_case(f"log-mel {framing} factored", factored[framing], big)
    if not quick:
      logmel_case("log-mel unfold factored fp16-DFT", LogMel(cfg, "unfold", dtypes.half, dft="factored"), big)
      logmel_case("log-mel unfold factored tf32-DFT", factored["unfold"], big, tf32=True)
      for framing in ("conv", "unfold"):
        logmel_case(f"log-mel {framing} fp16-DFT", LogMel(cfg, framing, dtypes.half), big)
        logmel_case(f"log-mel {framing} tf32-DFT", frontends[framing], big, tf32=True)
  if "numpy" in args.cases:
    for n in (1, big):
      b.run(f"numpy rfft log-mel b={n}", lambda n=n: numpy_logmel(clips[n], cfg, fb), rate=(n, "clips/s"),
            sync=lambda: None, **iters, audio_s_per_call=n * 1.0)
  # the classifier at its training configuration: 1 s clips at 8 kHz -> (40, 101) log-mel
  ccfg = MelConfig()
  frontend, model = LogMel(ccfg, args.framing, dft=args.dft), AudioCNN(len(SYNTH_CLASSES), args.widths, ccfg.n_mels)
  predict = {n: make_predict(frontend, model) for n in (1, big)}          # one JIT per input shape
  waves = {n: Tensor(rng.standard_normal((n, ccfg.sample_rate)).astype(np.float32) * 0.1).realize() for n in (1, big)}
  if "classify" in args.cases:
    b.run("classify (log-mel+CNN) b=1", lambda: predict[1](waves[1]), **iters, audio_s_per_call=1.0)
    b.run(f"classify (log-mel+CNN) b={big}", lambda: predict[big](waves[big]), rate=(big, "clips/s"), **iters, audio_s_per_call=big * 1.0)
  if quick or "train" not in args.cases: return finish_bench(b, args)      # --quick (tests): the train step's compile alone takes longer than the rest
  opt = nn.optim.Adam(get_parameters(model), lr=1e-3)
  labels = Tensor(rng.integers(0, len(SYNTH_CLASSES), big).astype(np.int32)).realize()
  @TinyJit
  def train_step(wave, y):
    with Context(TRAINING=1):
      opt.zero_grad()
      loss = model(spec_augment(frontend(wave))).sparse_categorical_crossentropy(y)
      loss.backward(); opt.step()
      return loss.realize()
  b.run(f"train step b={big}", lambda: train_step(waves[big], labels), rate=(big, "clips/s"), **iters, audio_s_per_call=big * 1.0)
  return finish_bench(b, args)


def finish_bench(b, args) -> int:
  for r in b.records:                  # real-time factor: seconds of audio per second of compute
    r["realtime_x"] = r.pop("audio_s_per_call") / (r["median_ms"] / 1e3)
  b.print(f"audio-ml: log-mel (16 kHz, n_fft 512, hop 160, 80 mels) and classifier (8 kHz, 40 mels)")
  print("\n| case | real-time factor (audio s / compute s) | max abs log-mel error vs numpy |\n|---|---:|---:|")
  for r in b.records:
    err = f"{r['max_abs_err_vs_numpy']:.1e}" if "max_abs_err_vs_numpy" in r else ""
    print(f"| {r['case']} | {r['realtime_x']:,.0f}x | {err} |")
  b.write_json(args.json)
  return 0


# ================================================================================================
# main
# ================================================================================================

def parse_args(argv=None):
  p = common.project_parser(PROJECT, __doc__, quick_help="tiny synthetic setting for tests (seconds); checks >= 80 %%")
  d = p.add_argument_group("data")
  d.add_argument("--data", metavar="DIR", type=existing_path, default=None, help="train on this folder of labelled audio instead of synthetic sounds")
  d.add_argument("--file", metavar="WAV", type=existing_path, default=None, help="with --load: classify this file and print the top-3 classes")
  d.add_argument("--visualize", action="store_true", help="write visualize.png: waveform, log-mel and class probabilities")
  d.add_argument("--clip-seconds", type=positive_float, default=1.0, help="clips are padded/cropped to this length")
  d.add_argument("--train-clips", type=positive_int, default=4000, help="synthetic training clips")
  d.add_argument("--test-clips", type=positive_int, default=1000, help="synthetic held-out clips")
  f = p.add_argument_group("log-mel front end")
  f.add_argument("--sample-rate", type=positive_int, default=8000, help="Hz; audio is resampled to this")
  f.add_argument("--n-fft", type=positive_int, default=256, help="DFT size in samples (even)")
  f.add_argument("--win-length", type=positive_int, default=None, help="window length in samples, <= n_fft (default: 25 ms, at most n_fft)")
  f.add_argument("--hop", type=positive_int, default=80, help="samples between frames")
  f.add_argument("--window", choices=("hann", "hamming", "rect"), default="hann", help="analysis window")
  f.add_argument("--no-center", action="store_true", help="no reflect padding: frame t starts (not centred) at t*hop")
  f.add_argument("--power", type=float, choices=(1.0, 2.0), default=2.0, help="2: power, 1: magnitude spectrum")
  f.add_argument("--n-mels", type=positive_int, default=40, help="mel channels")
  f.add_argument("--fmin", type=nonnegative_float, default=20.0, help="lowest mel edge in Hz")
  f.add_argument("--fmax", type=positive_float, default=None, help="default: sample_rate / 2")
  f.add_argument("--mel-scale", choices=("slaney", "htk"), default="slaney", help="slaney: linear below 1 kHz, log above; htk: 2595*log10(1+f/700)")
  f.add_argument("--mel-norm", choices=("slaney", "none"), default="slaney", help="slaney: equal-area triangles; none: peak 1")
  f.add_argument("--log", choices=("ln", "db"), default="ln", help="ln(mel) or 10*log10(mel)")
  f.add_argument("--log-floor", type=positive_float, default=1e-6, help="mel power is clamped to at least this before the log")
  f.add_argument("--dft", choices=("factored", "dense"), default="factored", help="factored: one Cooley-Tukey split, two small matmuls (~5x fewer FLOPs); dense: one N x N matmul")
  f.add_argument("--framing", choices=LogMel.FRAMINGS, default="unfold", help="how frames reach the DFT (same result); conv and hopsum need --dft dense")
  p.add_argument("--cases", type=lambda v: set(v.split(",")), default="logmel,numpy,classify,train",
                 help="with --bench: which groups to time, comma-separated from logmel,numpy,classify,train")
  t = p.add_argument_group("training")
  t.add_argument("--steps", type=positive_int, default=800, help="optimizer steps")
  t.add_argument("--batch", type=positive_int, default=64, help="clips per step (and per evaluation batch)")
  t.add_argument("--lr", type=positive_float, default=3e-3, help="Adam peak learning rate (cosine decay to 0)")
  t.add_argument("--widths", type=int_list, default=[16, 32, 64], help="channels of the conv blocks")
  t.add_argument("--specaugment", action="store_true", help="random frequency and time masks on the log-mel")
  t.add_argument("--target", type=float, default=None, help="held-out accuracy %% to PASS (default 98 synthetic, 80 --quick, 97 --data)")
  args = p.parse_args(argv)
  if not args.cases or args.cases - {"logmel", "numpy", "classify", "train"}:
    p.error(f"--cases {','.join(sorted(args.cases))}: choose from logmel,numpy,classify,train")
  if args.dft == "factored" and args.framing not in ("unfold", "gather"):
    p.error(f"--framing {args.framing} builds the dense DFT into the framing; with --dft factored use unfold or gather")
  if args.quick and args.data is None:
    args.train_clips, args.test_clips, args.steps, args.batch, args.widths, args.hop = 800, 200, 100, 32, [8, 16, 32], 160
  return args


def frontend_config(args) -> MelConfig:
  return MelConfig(sample_rate=args.sample_rate, n_fft=args.n_fft, win_length=args.win_length or min(args.n_fft, round(0.025 * args.sample_rate)), hop=args.hop,
                   window=args.window, center=not args.no_center, power=args.power, n_mels=args.n_mels, fmin=args.fmin,
                   fmax=args.fmax, mel_scale=args.mel_scale, mel_norm=args.mel_norm, log=args.log, log_floor=args.log_floor).validate()


def load_model(path: str, framing: str = "unfold", dft: str = "factored"):
  """-> (frontend, model, meta) rebuilt from a checkpoint's metadata; one-line errors."""
  from common.files import load_checkpoint, check_state_matches
  from tinygrad.nn.state import load_state_dict
  state, meta = load_checkpoint(path)
  if meta.get("model") != "audio-ml/AudioCNN": fail(f"checkpoint {path} was not written by audio_classify.py")
  cfg = MelConfig(**meta["frontend"]).validate()
  model = AudioCNN(len(meta["labels"]), meta["widths"], cfg.n_mels)
  check_state_matches(get_state_dict(model), state, f"checkpoint {path}")
  load_state_dict(model, state, verbose=False)
  return LogMel(cfg, framing, dft=dft), model, meta


def main() -> int:
  args = parse_args()
  if args.bench: return bench(args)
  if args.file and not args.load: fail("--file needs --load CHECKPOINT (a model trained by this script)")
  from common.device import open_device
  open_device()                                          # a missing device is a one-line error, not a traceback
  rng = common.seed_all(args.seed)
  out = Path(args.out)

  if args.file:                                          # inference on one file: top-3
    frontend, model, meta = load_model(args.load, args.framing, args.dft)
    cfg, labels = frontend.cfg, meta["labels"]
    wave = load_audio(args.file, cfg.sample_rate, int(round(meta["clip_seconds"] * cfg.sample_rate)), meta["peak_normalize"])
    probs = make_predict(frontend, model)(Tensor(wave[None])).numpy()[0]
    for i in np.argsort(-probs)[:3]: print(f"{labels[i]:>14s}  {100 * probs[i]:5.1f} %")
    if args.visualize:
      plot_clips(out / "visualize.png", wave[None], [Path(args.file).name], frontend(Tensor(wave[None])).numpy(), probs[None],
                 labels, cfg.sample_rate, cfg.hop)
      print(f"wrote {out / 'visualize.png'}")
    return 0

  if args.load: frontend, model, meta = load_model(args.load, args.framing, args.dft)
  cfg = frontend.cfg if args.load else frontend_config(args)
  clip_seconds = meta["clip_seconds"] if args.load else args.clip_seconds
  n_samples = int(round(clip_seconds * cfg.sample_rate))
  if n_samples <= cfg.n_fft: fail(f"--clip-seconds {clip_seconds:g} gives {n_samples} samples, not more than --n-fft {cfg.n_fft}")
  if args.data:
    x_train, y_train, x_test, y_test, labels = load_folder(Path(args.data), cfg, n_samples, rng)
    peak_normalize, default_target = True, 97.0
  else:
    labels = list(SYNTH_CLASSES)
    x_train, y_train = synth_dataset(args.train_clips, rng, n_samples, cfg.sample_rate)
    x_test, y_test = synth_dataset(args.test_clips, np.random.default_rng(args.seed + 10_000), n_samples, cfg.sample_rate)
    peak_normalize, default_target = False, (80.0 if args.quick else 98.0)
    print(f"data: synthetic, {len(labels)} classes, {len(x_train)} train / {len(x_test)} held-out clips of {clip_seconds:g} s at {cfg.sample_rate} Hz")
  if args.load and meta["labels"] != labels:
    fail(f"checkpoint {args.load} was trained on labels {meta['labels'][:4]}... ({len(meta['labels'])}), this data has {labels[:4]}... ({len(labels)})")

  T = cfg.n_frames(n_samples)
  if args.load:
    predict, history, train_s = make_predict(frontend, model), None, 0.0
  else:
    frontend, model = LogMel(cfg, args.framing, dft=args.dft), AudioCNN(len(labels), args.widths, cfg.n_mels)
    if T < 2 ** len(args.widths) or cfg.n_mels < 2 ** len(args.widths):
      fail(f"log-mel ({cfg.n_mels}, {T}) is too small for {len(args.widths)} pooling blocks: fewer --widths or more --n-mels")
    n_params = sum(p.numel() for p in get_parameters(model))
    print(f"model: log-mel ({cfg.n_mels}, {T}) -> CNN {args.widths} -> {len(labels)} classes, {n_params:,} parameters; "
          f"{args.steps} steps of batch {args.batch}{', SpecAugment' if args.specaugment else ''}")
    history, train_s, predict = train(frontend, model, x_train, y_train, x_test, y_test, args, rng)

  probs = predict_all(predict, x_test, args.batch)
  y_pred = probs.argmax(1)
  accuracy = 100 * float((y_pred == y_test).mean())
  matrix = confusion(y_test, y_pred, len(labels))
  print(f"held-out accuracy {accuracy:.2f} % ({int((y_pred == y_test).sum())}/{len(y_test)})" + (f", training took {train_s:.0f} s" if history else ""))

  from common.files import save_json, save_checkpoint
  from common.plots import plot_confusion
  written = [plot_confusion(out / "confusion.png", matrix, labels, title=f"held-out, {accuracy:.1f} % correct")]
  if history:
    plot_training(history, out / "curves.png"); written.append(out / "curves.png")
  if args.visualize:
    present = np.unique(y_test)                                       # four classes spread over the label list
    pick = [int(np.flatnonzero(y_test == c)[0]) for c in present[np.linspace(0, len(present) - 1, min(4, len(present))).astype(int)]]
    plot_clips(out / "visualize.png", x_test[pick], [f"held-out: {labels[y_test[i]]}" for i in pick],
               frontend(Tensor(x_test[pick])).numpy(), probs[pick], labels, cfg.sample_rate, cfg.hop)
    written.append(out / "visualize.png")
  if args.save and history:
    meta = {"model": "audio-ml/AudioCNN", "labels": labels, "widths": args.widths, "frontend": asdict(cfg),
            "clip_seconds": clip_seconds, "peak_normalize": peak_normalize, "test_accuracy": accuracy}
    written.append(save_checkpoint(get_state_dict(model), args.save, meta))
  target = args.target if args.target is not None else default_target
  summary = {"data": args.data or "synthetic", "labels": labels, "test_accuracy_pct": accuracy, "target_pct": target,
             "test_clips": len(y_test), "train_clips": len(y_train), "train_seconds": train_s,
             "steps": None if not history else args.steps, "confusion": matrix.tolist(), "frontend": asdict(cfg),
             "final_train_loss": history["loss"][-1] if history else None}
  written.append(save_json(summary, out / "summary.json"))
  print("wrote " + ", ".join(str(w) for w in written))
  return 0 if check("held-out accuracy", accuracy, target, unit=" %") else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
