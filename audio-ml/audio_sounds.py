"""Synthetic sound classes, the default data of audio_classify.py: nothing to download, and ten classes
a log-mel CNN tells apart only by learning spectral and temporal cues, since pitch, modulation rate,
onset, duration, level and the background noise all vary from clip to clip.

    x, y = synth_dataset(n_clips, rng, n_samples, sample_rate)     # (n_clips, n_samples) float32, (n_clips,) int32
"""
import numpy as np


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
  def loguni(lo: float, hi: float) -> float: return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
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
  def db(v: float) -> float: return 10 ** (v / 20)
  event_db = rng.uniform(-30, -3)
  bg_db = rng.uniform(-70, -40) if label == 0 else min(rng.uniform(-70, -40), event_db - rng.uniform(10, 40))
  x = db(bg_db) * (rng.standard_normal(n) if rng.random() < 0.5 else pink(rng, n))
  if label == 0: return x.astype(np.float32)
  length = int(rng.uniform(0.4, 1.0) * n)           # >= 2 cycles of the slowest AM/FM
  onset = int(rng.integers(0, n - length + 1))
  event = synth_event(SYNTH_CLASSES[label], rng, length, sr)
  ramp = min(int(0.01 * sr), length // 2)                                   # 10 ms fades: no clicks at the edges
  env = np.ones(length)
  env[:ramp], env[length - ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
  x[onset:onset + length] += db(event_db) * event / (np.sqrt(np.mean(event ** 2)) + 1e-12) * env
  return x.astype(np.float32)


def synth_dataset(n_clips: int, rng: np.random.Generator, n: int, sr: int) -> tuple[np.ndarray, np.ndarray]:
  labels = np.arange(n_clips) % len(SYNTH_CLASSES)                         # balanced
  rng.shuffle(labels)
  return np.stack([synth_clip(int(y), rng, n, sr) for y in labels]), labels.astype(np.int32)
