"""Log-mel spectrograms as matrix products: the front end of audio_classify.py, all in tinygrad.

    waveform ─► frames ─► windowed DFT (a matmul) ─► power ─► mel filterbank (a matmul) ─► log

    frontend = LogMel(MelConfig(sample_rate=16000, n_fft=512, hop=160, n_mels=80))
    logmel = frontend(Tensor(waves))                       # (B, L) -> (B, n_mels, T)

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
   per frame, ~23× an FFT's 5·N·log2 N at N = 512. One Cooley-Tukey split keeps most of the saving:
   with N = N1·N2, n = N2·n1 + n2 and k = k1 + N1·k2 (the multiple of N in nk drops out),
       X[k1 + N1·k2] = Σ_n2 e^(−2πi·n2·k2/N2) · e^(−2πi·n2·k1/N) · Σ_n1 x_w[N2·n1 + n2]·e^(−2πi·n1·k1/N1)
   stage 1, the inner sum: a length-N1 DFT for every n2, frames (B, T, N2, N1) @ [cos | −sin] (N1, 2·N1).
   stage 2: the twiddle and a length-N2 DFT folded into one complex matrix per k1, as a real product
       on [Re | Im] ((a + ib)(P + iQ) = [a | b] @ [[P, Q], [−Q, P]]): (B, T, N1, 1, 2·N2) @ (N1, 2·N2, 2·K2),
       with k2 < K2 = ⌊N/2 / N1⌋ + 1 since only k ≤ N/2 is needed.
   The output comes in (k1, k2) order; the mel filterbank's rows are permuted to match once, in numpy
   (rows with k > N/2 are zero). 4·N·(N1 + 2·K2) FLOPs per frame: 200 per sample for 512 = 32·16,
   against 1024 dense; the same numbers to rounding.

3. Power spectrum and mel filterbank:
       P[t, k] = |X[t, k]|^p    (p = 2 power, p = 1 magnitude)             (B, T, F)
       M[t, m] = Σ_k P[t, k]·fb[k, m]                                      (B, T, n_mels)
   fb holds triangles evenly spaced on the mel scale between fmin and fmax, built once in numpy:
       HTK:     mel(f) = 2595·log10(1 + f/700)
       Slaney:  mel(f) = f / (200/3) below 1 kHz, 15 + ln(f/1000) / (ln 6.4 / 27) above
   Slaney area normalisation scales triangle m by 2 / (f_right − f_left), so each has equal area.

4. Log with a floor:  ln(max(M, floor))  or in decibels  10·log10(max(M, floor)).  Out: (B, n_mels, T).

All of 1–4 is checked in tests/test_audio_ml.py against a float64 np.fft.rfft reference (and librosa
where installed) to torchaudio's tolerance vs librosa, atol 5e-4 / rtol 1e-5.
Audio files reach it through `resample` (a Kaiser-windowed sinc, below) and `fix_length`.
MelConfig's defaults are audio_classify.py's command-line defaults.
"""
from __future__ import annotations
import math, sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # imported from anywhere: find common/ at the repo root
import common  # noqa: F401                                     # before tinygrad: NV=1 -> DEV=NV, ...
from common import UserError, fail

import numpy as np
from tinygrad import Tensor, dtypes


@dataclass(frozen=True)
class MelConfig:
  """The log-mel front end: what it computes (all but the last two fields) and how (dft, framing)."""
  sample_rate: int = 8000
  n_fft: int = 256
  win_length: int | None = None  # None: 25 ms at sample_rate, at most n_fft (200 at the defaults); zero-padded to n_fft
  hop: int = 80                  # 10 ms at 8 kHz
  window: str = "hann"           # hann | hamming | rect
  center: bool = True            # reflect-pad n_fft/2 at both ends so frame t is centred on sample t*hop
  power: float = 2.0             # 2: power spectrum, 1: magnitude
  n_mels: int = 40
  fmin: float = 20.0
  fmax: float | None = None      # None: sample_rate / 2
  mel_scale: str = "slaney"      # slaney | htk
  mel_norm: str = "slaney"       # slaney (equal-area triangles) | none
  log: str = "ln"                # ln | db
  log_floor: float = 1e-6
  dft: str = "factored"          # factored (two small matmuls) | dense (one N x N matmul): same numbers
  framing: str = "unfold"        # unfold | gather (either DFT) | conv | hopsum (dense only): same numbers

  def __post_init__(self):
    if self.win_length is None: object.__setattr__(self, "win_length", max(1, min(self.n_fft, round(0.025 * self.sample_rate))))

  def validate(self) -> MelConfig:
    choices = {"window": ("hann", "hamming", "rect"), "mel_scale": ("slaney", "htk"), "mel_norm": ("slaney", "none"),
               "log": ("ln", "db"), "dft": ("factored", "dense"), "framing": LogMel.FRAMINGS, "power": (1.0, 2.0)}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed: fail(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose from {', '.join(map(str, allowed))}")
    for name in ("sample_rate", "n_fft", "hop", "n_mels"):
      if getattr(self, name) < 1: fail(f"--{name.replace('_', '-')} {getattr(self, name)} must be > 0")
    if self.n_fft % 2: fail(f"--n-fft {self.n_fft} must be even (the real DFT basis pairs cos and sin columns)")
    if not 0 < self.win_length <= self.n_fft: fail(f"--win-length {self.win_length} must be between 1 and --n-fft {self.n_fft}")
    if self.hop > self.n_fft: fail(f"--hop {self.hop} must not exceed --n-fft {self.n_fft} (samples would be skipped)")
    fmax = self.sample_rate / 2 if self.fmax is None else self.fmax
    if not 0 <= self.fmin < fmax <= self.sample_rate / 2:
      fail(f"need 0 <= --fmin ({self.fmin:g}) < --fmax ({fmax:g}) <= sample_rate/2 ({self.sample_rate / 2:g})")
    if self.n_mels > self.n_fft // 2 + 1: fail(f"--n-mels {self.n_mels} exceeds the {self.n_fft // 2 + 1} DFT bins of --n-fft {self.n_fft}")
    if not 0 < self.log_floor < math.inf: fail(f"--log-floor {self.log_floor} must be a positive finite number")
    if self.dft == "factored":
      if self.framing not in ("unfold", "gather"): fail(f"--framing {self.framing} builds the dense DFT in; with --dft factored use unfold or gather")
      dft_factors(self.n_fft)
    return self

  @property
  def n_freqs(self) -> int: return self.n_fft // 2 + 1

  def n_frames(self, n_samples: int) -> int:
    padded = n_samples + (2 * (self.n_fft // 2) if self.center else 0)
    return 1 + (padded - self.n_fft) // self.hop


# ==== 1-4. The log-mel front end ============================================================================

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
  """wave (B, L) -> log-mel (B, n_mels, T). cfg.dft and cfg.framing choose the kernels, not the numbers."""
  FRAMINGS = ("conv", "unfold", "hopsum", "gather")

  def __init__(self, cfg: MelConfig, dft_dtype=dtypes.float32):
    self.cfg, self.framing, self.dft_dtype, self.dft = cfg.validate(), cfg.framing, dft_dtype, cfg.dft
    if self.dft == "factored":
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
    return mel.maximum(self.cfg.log_floor).log10() * 10                    # "db"


# ==== Audio in: resampling and a fixed length (the file reader is common.files.read_audio) ==================

def resample(x: np.ndarray, sr_in: int, sr_out: int, zero_crossings: int = 16, rolloff: float = 0.94, max_out: int | None = None) -> np.ndarray:
  """Band-limited resampling by a Kaiser-windowed sinc: y(t_j) = Σ_n x[n]·h(t_j − n), t_j = j·sr_in/sr_out,
  h(τ) = 2c·sinc(2c·τ)·kaiser(τ / half_width), c = rolloff·min(sr_in, sr_out)/2 / sr_in (cycles/sample).
  The low-pass at c sits below both Nyquist frequencies, so nothing above the new one aliases.
  `max_out` computes only the first outputs (the rest would be cropped away)."""
  if sr_in == sr_out: return x[:max_out].astype(np.float32)
  c = rolloff * min(sr_in, sr_out) / 2 / sr_in
  half_width = zero_crossings / (2 * c)                                     # input samples each side
  n_out = min(int(round(len(x) * sr_out / sr_in)), max_out or math.inf)
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
