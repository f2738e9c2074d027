"""A small CNN sound classifier that really trains, on log-mel spectrograms computed as matrix products.

The whole audio pipeline runs in tinygrad, inside one TinyJit'd function per step:

    waveform ─► frames ─► windowed DFT (a matmul) ─► power ─► mel filterbank (a matmul) ─► log ─► CNN ─► class

The front end is logmel.py, with its tutorial: frames are views of the padded clip (B, T, n_fft); the
real DFT is one (N, N) matrix product (`--dft dense`) or, by default, two small ones after one
Cooley-Tukey split N = N1·N2 (`--dft factored`, ~5× fewer FLOPs, the same numbers); |X|² goes through
a mel filterbank matmul (HTK or Slaney scale) and a floored log. Its MelConfig holds the front-end
flags' defaults; tests/test_audio_ml.py checks it against a float64 np.fft.rfft reference.

The classifier: input BatchNorm, then blocks of [3×3 conv → BatchNorm → ReLU → 2×2 max-pool]
(widths 16, 32, 64 by default), global mean and max pooling over time (the coarse frequency axis is
kept: white and pink noise, or two vowels, differ in *where* their energy sits), dropout, one linear
layer to the classes. Loss: cross-entropy; optimizer: Adam with cosine learning-rate decay; optional
SpecAugment (`--specaugment`: one random band of < 8 mel channels and one random span of < 20 frames
per clip set to the clip's mean). Waveforms are also shifted (±0.1 clip) and scaled (±6 dB) at random.
Shapes at the defaults (8 kHz, 1 s, n_fft 256, win 200, hop 80, 40 mels): wave (B, 8000) → log-mel
(B, 40, 101) → (B, 16, 20, 50) → (B, 32, 10, 25) → (B, 64, 5, 12) → mean ‖ max over time (B, 640) → (B, classes).
Audio files are resampled by a Kaiser-windowed sinc (logmel.resample), then padded or cropped to --clip-seconds.

Data: by default synthetic sounds (silence, tone, up/down chirp, AM and FM tones,
white and pink noise, click train, square wave; random pitch, modulation, onset, duration, level and
background noise; nothing is downloaded). `--data DIR`: audio files labelled by sub-folder
(DIR/dog/x.wav; 20 % of each class held out) or named {label}_{speaker}_{take}.wav (Free Spoken Digit
Dataset: takes 0–4 are the test set, its customary split); any rate and channel count.

Run it (a Jetson: prefix NV=1; a laptop: as is, tinygrad picks its CPU or GPU):
  NV=1 python3 audio-ml/audio_classify.py              # synthetic demo, checks >= 98 %, saves out/audio-ml/model.safetensors
  NV=1 python3 audio-ml/audio_classify.py --file recording.wav    # top-3 classes by the model the demo saved
  NV=1 python3 audio-ml/audio_classify.py --bench                 # front end, classifier, train step (audio_bench.py)
  python3 audio-ml/audio_classify.py --quick                      # tiny setting for tests; checks >= 80 %
  python3 audio-ml/audio_classify.py --data path/to/fsdd --specaugment --steps 600 --save out/fsdd.safetensors
  python3 audio-ml/audio_classify.py --load out/fsdd.safetensors --data path/to/fsdd   # evaluate only
Every training run saves <--out>/model.safetensors (and --save PATH). --json writes the timing records
(common.bench schema) of whatever ran: the benchmark, the training steps and evaluation batches, or the
classification. A flag that would do nothing in a mode (--steps with --load, --n-fft with --file) is refused.

Flags worth trying: --dft dense, --framing (unfold / gather with either DFT; conv / hopsum with --dft
dense: same numbers, different kernels), --mel-scale htk, --log db, --specaugment, --widths 8,16,32,
--hop 160 (half the frames), JITBEAM=2 (kernel search on the captured JIT), --half (mixed precision: the
CNN's convolutions in fp16 with fp32 weights and a scaled loss, common/mixed.py; not yet timed on a GPU).

Results (seed 0; README.md has them with their commands): on a 2-core x86 CPU the synthetic demo
reached 100 % (1000/1000) held-out accuracy in its 800 steps, FSDD (customary split) 100 % (200/200)
in 600 steps. The Jetson Orin has not been measured: expect training several times faster than a laptop CPU.
"""
from __future__ import annotations
import argparse, math, os, re, sys, time
from dataclasses import dataclass, asdict, fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run as a file: find common/ at the repo root
import common                                                   # before tinygrad: NV=1 -> DEV=NV, ...
from common import fail, check
from common.cli import (check_out_dir, existing_file, existing_path, finite_float, float_range, int_list, nonnegative_float, positive_float,
                        positive_int)
from common.bench import Bench, Timing
from common.datasets import AUDIO_SUFFIXES, holdout_split, scan_labelled
from common.device import synchronize
from common.files import check_state_matches, load_checkpoint, read_audio, save_checkpoint, save_json
from common.train import predict_in_batches, realize_init, shuffled_batches
from common.conv import Conv2d
from common.mixed import LossScaler, half_precision

from logmel import MelConfig, LogMel, resample, fix_length

import numpy as np
from tinygrad import Tensor, TinyJit, nn
from tinygrad.helpers import Context
from tinygrad.nn.state import get_state_dict, get_parameters, load_state_dict

PROJECT, SCRIPT_ID, MODEL_ID = "audio-ml", "audio-ml/audio_classify.py", "AudioCNN"


# ==== Configuration: the command line's defaults (the front end's are logmel.MelConfig's) =====================

@dataclass(frozen=True)
class TrainConfig:
  """The classifier and its training."""
  widths: tuple[int, ...] = (16, 32, 64)   # channels of the conv blocks
  steps: int = 800
  batch: int = 64               # clips per step (and per evaluation batch, at most the held-out set)
  lr: float = 3e-3              # Adam peak learning rate, cosine decay to 0
  specaugment: bool = False
  clip_seconds: float = 1.0     # every clip is padded or cropped to this length
  train_clips: int = 4000       # synthetic data only
  test_clips: int = 1000
  half: bool = False            # fp16 convolutions, fp32 weights, loss scaling (common/mixed.py)

TARGET_PCT = {"synthetic": 98.0, "folder": 97.0, "quick": 80.0}     # held-out accuracy to PASS


# ==== The classifier ========================================================================================

class AudioCNN:
  """[conv 3×3 → BatchNorm → ReLU → max-pool 2×2] × len(widths), then global mean and max pooling over
  time. The coarse frequency axis is kept: a conv is blind to *where* in frequency a pattern sits, and
  white vs pink noise, or one vowel vs another, differ exactly in that."""
  def __init__(self, n_classes: int, widths: list[int], n_mels: int):
    self.input_norm = nn.BatchNorm2d(1)        # log-mel levels are far from zero mean / unit variance
    chans = [1] + list(widths)
    self.convs = [Conv2d(a, b, 3, padding=1, bias=False) for a, b in zip(chans, chans[1:])]
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


# ==== Training and evaluation ===============================================================================

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

@dataclass
class Dataset:
  x_train: np.ndarray           # (N, samples) float32; empty when a loaded model is only evaluated
  y_train: np.ndarray           # (N,) int32 class indices into labels
  x_test: np.ndarray
  y_test: np.ndarray
  labels: list[str]
  source: str                   # "synthetic" or the folder
  peak_normalize: bool          # files are peak-normalised; the synthetic levels are part of the task

def train(frontend: LogMel, model: AudioCNN, data: Dataset, tc: TrainConfig, rng: np.random.Generator,
          predict: CallTimer) -> tuple[dict[str, list], CallTimer]:
  """Adam with cosine decay on random minibatches of augmented clips; held-out accuracy 8 times along."""
  if tc.half: half_precision(model)
  opt = nn.optim.Adam(get_parameters(model), lr=tc.lr)
  scaler = LossScaler(opt, enabled=tc.half)

  @TinyJit
  def train_step(wave: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    with Context(TRAINING=1):
      opt.zero_grad()
      feats = frontend(wave)                                                # log-mel on the device, no grad
      if tc.specaugment: feats = spec_augment(feats)
      logits = model(feats)
      loss = logits.sparse_categorical_crossentropy(labels)
      scaler.backward(loss)
      acc = (logits.argmax(-1) == labels).mean()
      Tensor.realize(*scaler.schedule_step(), loss, acc)
      return loss, acc

  realize_init(model, opt)
  step_timer = CallTimer(train_step)
  history: dict[str, list] = {"step": [], "loss": [], "train_acc": [], "eval_step": [], "test_acc": []}
  eval_every, eval_batch = max(1, tc.steps // 8), min(tc.batch, len(data.x_test))
  bar = common.progress(range(tc.steps), total=tc.steps, desc="train")
  t0 = time.perf_counter()
  for step, idx in zip(bar, shuffled_batches(len(data.x_train), tc.batch, rng)):
    lr = tc.lr * 0.5 * (1 + math.cos(math.pi * step / tc.steps))                  # cosine decay to 0
    opt.lr.assign(Tensor([lr], device=opt.lr.device, dtype=opt.lr.dtype)).realize()
    loss, acc = step_timer(Tensor(augment(data.x_train[idx], rng).astype(np.float32)), Tensor(data.y_train[idx]))
    for key, value in (("step", step), ("loss", loss.item()), ("train_acc", acc.item())): history[key].append(value)
    if (step + 1) % eval_every == 0 or step + 1 == tc.steps:
      test_acc = float((predict_in_batches(predict, data.x_test, eval_batch).argmax(1) == data.y_test).mean())
      history["eval_step"].append(step + 1)
      history["test_acc"].append(test_acc)
      bar.set_description(f"train loss {history['loss'][-1]:.3f} test acc {100 * test_acc:.1f}%")
      if bar.disable: print(f"step {step + 1}/{tc.steps}: loss {np.mean(history['loss'][-eval_every:]):.3f}, "
                            f"held-out accuracy {100 * test_acc:.1f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
  return history, step_timer

def evaluate(predict: CallTimer, data: Dataset, batch: int) -> dict:
  """Class probabilities of every held-out clip, accuracy in % and the confusion matrix (true x predicted)."""
  probs = predict_in_batches(predict, data.x_test, min(batch, len(data.x_test)))
  y_pred = probs.argmax(1)
  matrix = np.zeros((len(data.labels), len(data.labels)), np.int64)
  np.add.at(matrix, (data.y_test, y_pred), 1)
  return {"probs": probs, "accuracy": 100 * float((y_pred == data.y_test).mean()), "correct": int((y_pred == data.y_test).sum()),
          "confusion": matrix}


# ==== The success check: held-out accuracy, against a target a constant answer cannot reach (check_target) ==

def passed(accuracy_pct: float, target_pct: float) -> bool:
  return check("held-out accuracy", accuracy_pct, target_pct, unit=" %")


# --- plumbing ------------------------------------------------------------------------------------------------
# Below: demo and real data, checkpoints, pictures, timing records, the command line, main. --bench is audio_bench.py.

# ==== Demo data: synthetic sound classes (nothing to download; pitch, level, timing and noise vary) =====

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


# ==== Real data: a folder of labelled audio files (scan and split in common.datasets; FSDD's rule here) =====

FSDD_NAME = re.compile(r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<take>\d+)$")

def labelled_split(root: Path, rng: np.random.Generator) -> tuple[list[Path], list[str], np.ndarray, str]:
  """-> (files, labels, test mask, how). Class sub-folders: a stratified 20 % of each class is held
  out. Files directly in the folder must be named {label}_{speaker}_{take} (FSDD), and takes 0-4 are
  the test set, the dataset's customary split (its speakers appear on both sides)."""
  files, labels = scan_labelled(root, AUDIO_SUFFIXES)
  if labels is not None:
    return files, labels, holdout_split(np.array(labels), len(files), 0.2, rng), "by sub-folder; stratified split: 20 % of each class test"
  names = [FSDD_NAME.match(p.stem) for p in files]
  if not all(names):
    bad = files[names.index(None)]
    fail(f"--data {root}: {bad.name} is neither in a class sub-folder nor named {{label}}_{{speaker}}_{{take}}")
  labels, test = [m["label"] for m in names], np.array([int(m["take"]) < 5 for m in names])
  for lab in sorted(set(labels)):
    takes = test[np.array(labels) == lab]
    if takes.all() or not takes.any():
      fail(f"--data {root}: class {lab!r} has only {'test (takes 0-4)' if takes.all() else 'training (takes 5+)'} files; the FSDD split needs both")
  return files, labels, test, "by file name; customary FSDD split: takes 0-4 test"

def load_audio(path: str | Path, sample_rate: int, n_samples: int, peak_normalize: bool = True) -> np.ndarray:
  """Any file libsndfile reads -> float32 (n_samples,) mono at sample_rate; one-line errors."""
  mono, sr = read_audio(path)
  peak = float(np.abs(mono).max())
  if peak < 1e-4: fail(f"audio {path} is silent (peak {peak:.1e}, below -80 dBFS)")
  x = fix_length(resample(mono, sr, sample_rate, max_out=n_samples), n_samples)
  return x / np.abs(x).max() * 0.9 if peak_normalize and np.abs(x).max() > 0 else x

def load_folder(root: Path, cfg: MelConfig, tc: TrainConfig, n_samples: int, rng: np.random.Generator, with_train: bool,
                target: float) -> Dataset:
  files, names, test, how = labelled_split(root, rng)
  labels = sorted(set(names))
  if len(labels) < 2: fail(f"--data {root}: only one class ({labels[0]!r}); a classifier needs at least two")
  use = np.ones(len(files), bool) if with_train else test                # evaluating a loaded model reads the test files only
  n_train = int((use & ~test).sum())
  check_sizes(cfg, tc, n_samples, n_train, int(test.sum()), with_train)
  check_target(target, [names[i] for i in np.flatnonzero(test)])
  order = np.concatenate([np.flatnonzero(use & ~test), np.flatnonzero(test)])   # training files first, each part in name order
  waves = np.zeros((len(order), n_samples), np.float32)
  for row, i in enumerate(common.progress(order, desc="loading audio")): waves[row] = load_audio(files[i], cfg.sample_rate, n_samples)
  y = np.array([labels.index(names[i]) for i in order], np.int32)
  print(f"data: {len(files)} files in {len(labels)} classes labelled {how} -> {n_train} train / {test.sum()} test clips read")
  return Dataset(waves[:n_train], y[:n_train], waves[n_train:], y[n_train:], labels, str(root), peak_normalize=True)

def synthetic_data(seed: int, cfg: MelConfig, tc: TrainConfig, n_samples: int, rng: np.random.Generator, with_train: bool,
                   target: float) -> Dataset:
  n_classes = len(SYNTH_CLASSES)
  for flag, n in (("--train-clips", tc.train_clips), ("--test-clips", tc.test_clips)):
    if n < n_classes and (with_train or flag == "--test-clips"): fail(f"{flag} {n} is fewer than the {n_classes} classes")
  check_sizes(cfg, tc, n_samples, tc.train_clips if with_train else 0, tc.test_clips, with_train)
  check_target(target, [SYNTH_CLASSES[i % n_classes] for i in range(tc.test_clips)])   # synth_dataset balances them
  x_train, y_train = synth_dataset(tc.train_clips, rng, n_samples, cfg.sample_rate) if with_train else (np.zeros((0, n_samples), np.float32),
                                                                                                       np.zeros(0, np.int32))
  x_test, y_test = synth_dataset(tc.test_clips, np.random.default_rng(seed + 10_000), n_samples, cfg.sample_rate)
  print(f"data: synthetic, {n_classes} classes, {len(x_train)} train / {len(x_test)} held-out clips of {tc.clip_seconds:g} s at {cfg.sample_rate} Hz")
  return Dataset(x_train, y_train, x_test, y_test, list(SYNTH_CLASSES), "synthetic", peak_normalize=False)


# ==== Checkpoints: the weights, and in the metadata everything needed to rebuild the same pipeline ==========

CHECKPOINT_META = ("labels", "widths", "frontend", "clip_seconds", "peak_normalize", "data")

def save_model(model: AudioCNN, dest: str | Path, cfg: MelConfig, tc: TrainConfig, data: Dataset, accuracy: float) -> Path:
  meta = {"labels": data.labels, "widths": list(tc.widths), "frontend": asdict(cfg), "clip_seconds": tc.clip_seconds,
          "peak_normalize": data.peak_normalize, "data": data.source, "test_accuracy": accuracy}
  return save_checkpoint(get_state_dict(model), dest, meta, script=SCRIPT_ID, model=MODEL_ID)

def frontend_from_meta(d, where: str) -> MelConfig:
  """The checkpoint's front-end table -> MelConfig; a missing, unknown or mistyped field is one line."""
  if not isinstance(d, dict): fail(f"{where}: metadata 'frontend' is not a table of front-end settings")
  types = {f.name: f.type for f in fields(MelConfig)}
  missing = sorted(set(types) - {"dft", "framing"} - set(d))
  if missing: fail(f"{where}: front-end metadata lacks {missing[0]!r}")
  for k, v in d.items():
    t = types.get(k)
    if t is None: fail(f"{where}: front-end setting {k!r} is unknown to this script")
    ok = (v is None and "None" in t) or (type(v) is bool if t == "bool" else isinstance(v, str) if t == "str" else
                                         type(v) is int if t.startswith("int") else type(v) in (int, float) and math.isfinite(v))
    if not ok: fail(f"{where}: front-end setting {k} = {v!r} is not of type {t}")
  return MelConfig(**d)

def load_model(path: str | Path, kernels: MelConfig) -> tuple[LogMel, AudioCNN, dict]:
  """-> (front end, model, metadata) rebuilt from a checkpoint; `kernels` gives dft and framing (they
  change the kernels, not the numbers). Every failure is one line naming what is wrong."""
  state, meta = load_checkpoint(path, script=SCRIPT_ID, model=MODEL_ID, required_meta=CHECKPOINT_META)
  where = f"checkpoint {path}"
  cfg = replace(frontend_from_meta(meta["frontend"], where), dft=kernels.dft, framing=kernels.framing).validate()
  labels, widths, clip = meta["labels"], meta["widths"], meta["clip_seconds"]
  if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(s, str) for s in labels) and len(set(labels)) == len(labels)):
    fail(f"{where}: metadata 'labels' is not a list of two or more distinct names")
  if not (isinstance(widths, list) and widths and all(type(w) is int and w > 0 for w in widths)):
    fail(f"{where}: metadata 'widths' is not a list of positive integers")
  if not (type(clip) in (int, float) and 0 < clip < math.inf): fail(f"{where}: metadata 'clip_seconds' is not a positive number")
  if type(meta["peak_normalize"]) is not bool: fail(f"{where}: metadata 'peak_normalize' is not true or false")
  check_shapes(cfg, widths, round(clip * cfg.sample_rate))
  model = AudioCNN(len(labels), widths, cfg.n_mels)
  check_state_matches(get_state_dict(model), state, where)
  load_state_dict(model, state, verbose=False)
  return LogMel(cfg), model, meta

def default_model(args) -> Path:
  """--file without --load: the model the last training run wrote under --out."""
  path = Path(args.out) / "model.safetensors"
  if not path.is_file():
    fail(f"--file needs a trained model and {path} does not exist: run `python3 audio-ml/audio_classify.py"
         f"{' --out ' + args.out if 'out' in args.given else ''}` first (it saves one there), or give --load PATH")
  return path


# ==== Pictures ==============================================================================================

def plot_training(history: dict, dest: Path) -> Path:
  from common.plots import figure, save_figure, moving_average
  fig, (ax_loss, ax_acc) = figure(1, 2, size=(10, 3.6))
  ax_loss.plot(history["step"], history["loss"], alpha=0.35, lw=1, label="train loss")
  ax_loss.plot(history["step"], moving_average(history["loss"], 20), lw=2, label="20-step mean")
  ax_loss.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="loss")
  ax_acc.plot(history["step"], 100 * moving_average(history["train_acc"], 20), label="train (20-step mean)")
  ax_acc.plot(history["eval_step"], 100 * np.array(history["test_acc"]), "o-", label="held-out")
  ax_acc.set(xlabel="step", ylabel="accuracy %", ylim=(0, 101), title="accuracy")
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return save_figure(fig, dest)

def plot_clips(dest: Path, waves: np.ndarray, names: list[str], logmels: np.ndarray, probs: np.ndarray,
               labels: list[str], cfg: MelConfig) -> Path:
  """One row per clip: waveform | log-mel | class probabilities."""
  from common.plots import figure, save_figure
  sr, hop = cfg.sample_rate, cfg.hop
  fig, axes = figure(len(waves), 3, size=(13, 2.6 * len(waves)), squeeze=False)
  for row, (w, name, lm, p) in enumerate(zip(waves, names, logmels, probs)):
    a_wave, a_mel, a_prob = axes[row]
    a_wave.plot(np.arange(len(w)) / sr, w, lw=0.5)
    a_wave.set(title=name, xlabel="s")
    a_mel.imshow(lm, origin="lower", aspect="auto", extent=(0, lm.shape[1] * hop / sr, 0, lm.shape[0]), cmap="magma")
    a_mel.set(title="log-mel", xlabel="s", ylabel="mel channel")
    a_prob.barh(range(len(labels)), p, color=["C1" if i == p.argmax() else "C0" for i in range(len(labels))])
    a_prob.set(yticks=range(len(labels)), xlim=(0, 1), title=f"→ {labels[int(p.argmax())]} ({100 * p.max():.1f} %)")
    a_prob.set_yticklabels(labels, fontsize=7)
  return save_figure(fig, dest)


# ==== Timing records (--json outside --bench: the calls this run made anyway) ===============================

class CallTimer:
  """`fn`, keeping each call's wall time with the device synchronized after it."""
  def __init__(self, fn): self.fn, self.seconds = fn, []
  def __call__(self, *args):
    t0 = time.perf_counter()
    out = self.fn(*args)
    synchronize()
    self.seconds.append(time.perf_counter() - t0)
    return out

def write_timings(path: str | None, cases: list[tuple[str, CallTimer, int]]) -> None:
  """--json PATH: one common.bench record per (case, timer, clips per call). A TinyJit's first two calls
  run plainly and capture it: they are the warm-up; the rest, the steady state."""
  if not path: return
  b = Bench(PROJECT)
  for name, timer, clips in cases:
    warm = min(2, len(timer.seconds) - 1)
    if timer.seconds: b.add(name, Timing(timer.seconds[:warm], timer.seconds[warm:]), rate=(clips, "clips/s"))
  b.write_json(path)


# ==== Command line ==========================================================================================

def bench_cases(text: str) -> set[str]:
  cases = {c.strip() for c in text.split(",") if c.strip()}
  if not cases or cases - BENCH_GROUPS: raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(sorted(BENCH_GROUPS))}")
  return cases

BENCH_GROUPS = {"logmel", "numpy", "classify", "train"}

def parse_args(argv=None) -> argparse.Namespace:
  M, TC = MelConfig, TrainConfig
  p = common.project_parser(PROJECT, __doc__, quick_help="tiny setting: 800/200 synthetic clips, 100 steps of 32, widths 8,16,32, hop 160; "
                            "checks >= 80 %%", save_help="the trained model (.safetensors), besides <--out>/model.safetensors",
                            load_help="a model a training run saved: evaluated (on --data or the synthetic test set) or, with --file, used")
  shared = set(vars(p.parse_known_args([])[0])) - {"bench", "save", "load", "out"}     # common's flags that mean the same in every mode
  d = p.add_argument_group("data")
  d.add_argument("--data", metavar="DIR", type=existing_path, default=None, help="train on this folder of labelled audio instead of synthetic sounds")
  d.add_argument("--file", metavar="WAV", type=existing_file, default=None,
                 help="classify this file, print the top-3 classes (the model: --load, else <--out>/model.safetensors)")
  d.add_argument("--visualize", action="store_true", help="write visualize.png under --out: waveform, log-mel and class probabilities")
  d.add_argument("--clip-seconds", type=positive_float, default=TC.clip_seconds, help="clips are padded/cropped to this length")
  d.add_argument("--train-clips", type=positive_int, default=TC.train_clips, help="synthetic training clips")
  d.add_argument("--test-clips", type=positive_int, default=TC.test_clips, help="synthetic held-out clips")
  f = p.add_argument_group("log-mel front end")
  f.add_argument("--sample-rate", type=positive_int, default=M.sample_rate, help="Hz; audio is resampled to this")
  f.add_argument("--n-fft", type=positive_int, default=M.n_fft, help="DFT size in samples (even)")
  f.add_argument("--win-length", type=positive_int, default=M.win_length, help="window length in samples, <= n_fft (default: 25 ms, at most n_fft)")
  f.add_argument("--hop", type=positive_int, default=M.hop, help="samples between frames")
  f.add_argument("--window", choices=("hann", "hamming", "rect"), default=M.window, help="analysis window")
  f.add_argument("--no-center", action="store_true", help="no reflect padding: frame t starts (not centred) at t*hop")
  f.add_argument("--power", type=finite_float, choices=(1.0, 2.0), default=M.power, help="2: power, 1: magnitude spectrum")
  f.add_argument("--n-mels", type=positive_int, default=M.n_mels, help="mel channels")
  f.add_argument("--fmin", type=nonnegative_float, default=M.fmin, help="lowest mel edge in Hz")
  f.add_argument("--fmax", type=positive_float, default=M.fmax, help="highest mel edge in Hz (default: sample_rate / 2)")
  f.add_argument("--mel-scale", choices=("slaney", "htk"), default=M.mel_scale,
                 help="slaney: linear below 1 kHz, log above; htk: 2595 log10(1+f/700)")
  f.add_argument("--mel-norm", choices=("slaney", "none"), default=M.mel_norm, help="slaney: equal-area triangles; none: peak 1")
  f.add_argument("--log", choices=("ln", "db"), default=M.log, help="ln(mel) or 10*log10(mel)")
  f.add_argument("--log-floor", type=positive_float, default=M.log_floor, help="mel power is clamped to at least this before the log")
  f.add_argument("--dft", choices=("factored", "dense"), default=M.dft,
                 help="factored: one Cooley-Tukey split, two small matmuls (~5x fewer FLOPs); dense: one N x N matmul")
  f.add_argument("--framing", choices=LogMel.FRAMINGS, default=M.framing,
                 help="how frames reach the DFT (same result); conv and hopsum need --dft dense")
  p.add_argument("--cases", type=bench_cases, default=",".join(sorted(BENCH_GROUPS)), help="with --bench: which groups to time, comma-separated")
  t = p.add_argument_group("training")
  t.add_argument("--steps", type=positive_int, default=TC.steps, help="optimizer steps")
  t.add_argument("--batch", type=positive_int, default=TC.batch, help="clips per step (and per evaluation batch), at most the training set")
  t.add_argument("--lr", type=positive_float, default=TC.lr, help="Adam peak learning rate (cosine decay to 0)")
  t.add_argument("--half", action="store_true", help="mixed precision: fp16 convolutions, fp32 weights, dynamic loss scaling (common/mixed.py)")
  t.add_argument("--widths", type=int_list, default=list(TC.widths), help="channels of the conv blocks")
  t.add_argument("--specaugment", action="store_true", help="random frequency and time masks on the log-mel")
  t.add_argument("--target", type=float_range(0, 100), default=None,
                 help=f"held-out accuracy %% to PASS (default {TARGET_PCT['synthetic']:g} synthetic, {TARGET_PCT['folder']:g} --data, "
                      f"{TARGET_PCT['quick']:g} --quick)")
  p.preset("quick", train_clips=800, test_clips=200, steps=100, batch=32, widths=[8, 16, 32], hop=160, target=TARGET_PCT["quick"])
  args = p.parse_args(argv)
  args.every_mode = shared | {"dft", "framing"}
  return args

# Flags that mean something in each mode besides args.every_mode; a typed flag that would be ignored is refused.
MODE_FLAGS = {
  "bench": ({"bench", "cases", "widths", "half", "out"}, "with --bench (it times fixed synthetic workloads)"),    # common.compare passes --out
  "file": ({"file", "load", "out", "visualize"}, "with --file (the checkpoint fixes the model and its front end; nothing is trained)"),
  "evaluate": ({"load", "data", "out", "visualize", "batch", "target", "test_clips"},
               "with --load (the checkpoint fixes the model and its front end; it is evaluated, not trained)"),
}

def check_request(args) -> None:
  """One line for a flag that would do nothing in this mode (ignoring it silently would mislead)."""
  mode = "bench" if args.bench else "file" if args.file else "evaluate" if args.load else "train"
  allowed, why = MODE_FLAGS.get(mode, (set(vars(args)) - {"cases"}, "without --bench"))
  for dest in sorted(args.given - allowed - args.every_mode):
    fail(f"--{dest.replace('_', '-')} does nothing {why}; leave it out")
  if args.data and (typed := sorted(args.given & {"train_clips", "test_clips"})):
    fail(f"--{typed[0].replace('_', '-')} sizes the synthetic data; with --data the folder's files and split are used")

def frontend_config(args) -> MelConfig:
  return MelConfig(sample_rate=args.sample_rate, n_fft=args.n_fft, win_length=args.win_length, hop=args.hop, window=args.window,
                   center=not args.no_center, power=args.power, n_mels=args.n_mels, fmin=args.fmin, fmax=args.fmax, mel_scale=args.mel_scale,
                   mel_norm=args.mel_norm, log=args.log, log_floor=args.log_floor, dft=args.dft, framing=args.framing).validate()

def train_config(args) -> TrainConfig:
  return TrainConfig(widths=tuple(args.widths), steps=args.steps, batch=args.batch, lr=args.lr, specaugment=args.specaugment,
                     clip_seconds=args.clip_seconds, train_clips=args.train_clips, test_clips=args.test_clips, half=args.half)

def check_shapes(cfg: MelConfig, widths, n_samples: int) -> None:
  if n_samples <= cfg.n_fft: fail(f"--clip-seconds gives {n_samples} samples at {cfg.sample_rate} Hz, not more than --n-fft {cfg.n_fft}")
  frames, blocks = cfg.n_frames(n_samples), len(widths)
  if frames < 2 ** blocks or cfg.n_mels < 2 ** blocks:
    fail(f"log-mel ({cfg.n_mels}, {frames}) is too small for {blocks} pooling blocks: fewer --widths or more --n-mels")

def physical_memory() -> int | None:
  try: return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError): return None

def check_sizes(cfg: MelConfig, tc: TrainConfig, n_samples: int, n_train: int, n_test: int, with_train: bool) -> None:
  """Before any clip is made or read: the batch fits the training set, and neither the clips nor one
  step's activations (a rough count: frames, the conv blocks' outputs, their gradients) exceed memory."""
  if with_train and tc.batch > n_train: fail(f"--batch {tc.batch} is larger than the {n_train} training clips")
  if (total := physical_memory()) is None: return
  frames = cfg.n_frames(n_samples)
  per_clip = n_samples + 3 * frames * cfg.n_fft + cfg.n_mels * frames * (2 + sum(4 * w / 4 ** i for i, w in enumerate(tc.widths)))
  batch = tc.batch if with_train else min(tc.batch, n_test)
  needs = {("the clips", "fewer or shorter clips"): 2 * 4 * (n_train + n_test) * n_samples,
           (f"one {'training' if with_train else 'evaluation'} step of {batch} clips", "a smaller --batch or --widths"):
             4 * batch * per_clip * (2 if with_train else 1) + (4 * cfg.n_fft ** 2 if cfg.dft == "dense" else 0)}
  for (what, fix), need in needs.items():
    if need > total: fail(f"{what} would need about {need / 2**30:.1f} GiB, more than this machine's {total / 2**30:.1f} GiB: use {fix}")

def check_target(target: float, test_labels: list[str]) -> None:
  """A target at or below what always answering the commonest held-out class scores could not fail."""
  names, counts = np.unique(test_labels, return_counts=True)
  majority = 100 * counts.max() / counts.sum()
  if target <= majority:
    fail(f"the target {target:g} % (--target) is not above the {majority:.1f} % that always answering "
         f"{str(names[counts.argmax()])!r} scores on this held-out set: such a check cannot fail")


# ==== main: one function per stage ==========================================================================

@dataclass
class Run:
  cfg: MelConfig
  tc: TrainConfig
  frontend: LogMel
  model: AudioCNN
  data: Dataset
  target: float
  loaded: bool
  rng: np.random.Generator

def prepare(args) -> Run:
  """The model (from --load, or new), the data, the target; every size is checked before the work."""
  rng = common.seed_all(args.seed)
  if args.load:
    frontend, model, meta = load_model(args.load, MelConfig(dft=args.dft, framing=args.framing))
    cfg, tc = frontend.cfg, TrainConfig(widths=tuple(meta["widths"]), clip_seconds=meta["clip_seconds"], batch=args.batch, test_clips=args.test_clips)
  else:
    cfg, tc = frontend_config(args), train_config(args)
  n_samples = round(tc.clip_seconds * cfg.sample_rate)
  check_shapes(cfg, tc.widths, n_samples)
  target = args.target if args.target is not None else TARGET_PCT["folder" if args.data else "synthetic"]
  if args.data: data = load_folder(Path(args.data), cfg, tc, n_samples, rng, not args.load, target)
  else: data = synthetic_data(args.seed, cfg, tc, n_samples, rng, not args.load, target)
  if args.load and meta["labels"] != data.labels:
    fail(f"checkpoint {args.load} was trained on labels {meta['labels'][:4]}... ({len(meta['labels'])}), this data has {data.labels[:4]}... "
         f"({len(data.labels)})")
  if not args.load: frontend, model = LogMel(cfg), AudioCNN(len(data.labels), tc.widths, cfg.n_mels)
  return Run(cfg, tc, frontend, model, data, target, bool(args.load), rng)

def train_and_evaluate(run: Run) -> dict:
  predict = CallTimer(make_predict(run.frontend, run.model))
  history, step_timer, train_s = None, None, 0.0
  if not run.loaded:
    n_params = sum(p.numel() for p in get_parameters(run.model))
    print(f"model: log-mel ({run.cfg.n_mels}, {run.cfg.n_frames(run.data.x_test.shape[1])}) -> CNN {list(run.tc.widths)} -> "
          f"{len(run.data.labels)} classes, {n_params:,} parameters; {run.tc.steps} steps of batch {run.tc.batch}"
          f"{', SpecAugment' if run.tc.specaugment else ''}")
    t0 = time.perf_counter()
    history, step_timer = train(run.frontend, run.model, run.data, run.tc, run.rng, predict)
    train_s = time.perf_counter() - t0
  result = evaluate(predict, run.data, run.tc.batch)
  print(f"held-out accuracy {result['accuracy']:.2f} % ({result['correct']}/{len(run.data.y_test)})"
        + (f", training took {train_s:.0f} s" if history else ""))
  eval_batch = min(run.tc.batch, len(run.data.x_test))
  timings = [(f"classify (log-mel+CNN) b={eval_batch}", predict, eval_batch)]
  if step_timer: timings.insert(0, (f"train step b={run.tc.batch}", step_timer, run.tc.batch))
  return {**result, "history": history, "train_seconds": train_s, "timings": timings}

def write_results(args, run: Run, result: dict) -> None:
  """Pictures, the checkpoint (trained runs: <--out>/model.safetensors and --save), summary.json, --json."""
  from common.plots import plot_confusion
  out, data, acc = Path(args.out), run.data, result["accuracy"]
  written = [plot_confusion(out / "confusion.png", result["confusion"], data.labels, title=f"held-out, {acc:.1f} % correct")]
  if result["history"]: written.append(plot_training(result["history"], out / "curves.png"))
  if args.visualize:
    present = np.unique(data.y_test)                                  # four classes spread over the label list
    pick = [int(np.flatnonzero(data.y_test == c)[0]) for c in present[np.linspace(0, len(present) - 1, min(4, len(present))).astype(int)]]
    written.append(plot_clips(out / "visualize.png", data.x_test[pick], [f"held-out: {data.labels[data.y_test[i]]}" for i in pick],
                              run.frontend(Tensor(data.x_test[pick])).numpy(), result["probs"][pick], data.labels, run.cfg))
  if result["history"]:
    for dest in dict.fromkeys([out / "model.safetensors"] + ([Path(args.save)] if args.save else [])):
      written.append(save_model(run.model, dest, run.cfg, run.tc, data, acc))
  summary = {"data": data.source, "labels": data.labels, "test_accuracy_pct": acc, "target_pct": run.target, "checkpoint": args.load,
             "test_clips": len(data.y_test), "train_clips": len(data.y_train), "train_seconds": result["train_seconds"],
             "steps": run.tc.steps if result["history"] else None, "confusion": result["confusion"].tolist(), "frontend": asdict(run.cfg),
             "widths": list(run.tc.widths), "final_train_loss": result["history"]["loss"][-1] if result["history"] else None}
  written.append(save_json(summary, out / "summary.json"))
  print("wrote " + ", ".join(str(w) for w in written))
  write_timings(args.json, result["timings"])

def classify_file(args) -> int:
  """--file: the top-3 classes of one recording, by --load or the model the last training run saved."""
  if args.visualize: check_out_dir(args)
  path = args.load or default_model(args)
  frontend, model, meta = load_model(path, MelConfig(dft=args.dft, framing=args.framing))
  if not args.load: print(f"model: {path}, saved by the last training run ({meta['data']}, {len(meta['labels'])} classes; --load PATH picks another)")
  cfg, labels = frontend.cfg, meta["labels"]
  wave = load_audio(args.file, cfg.sample_rate, round(meta["clip_seconds"] * cfg.sample_rate), meta["peak_normalize"])
  predict = CallTimer(make_predict(frontend, model))
  for _ in range(3 if args.json else 1): probs = predict(Tensor(wave[None])).numpy()[0]    # --json: plain call, capture, one replay
  for i in np.argsort(-probs)[:3]: print(f"{labels[i]:>14s}  {100 * probs[i]:5.1f} %")
  if args.visualize:
    dest = plot_clips(Path(args.out) / "visualize.png", wave[None], [Path(args.file).name], frontend(Tensor(wave[None])).numpy(), probs[None],
                      labels, cfg)
    print(f"wrote {dest}")
  write_timings(args.json, [("classify file (log-mel+CNN) b=1", predict, 1)])
  return 0

def main(argv=None) -> int:
  args = parse_args(argv)
  check_request(args)
  if args.bench:
    from audio_bench import bench
    return bench(args)
  if args.file: return classify_file(args)
  check_out_dir(args)
  run = prepare(args)
  result = train_and_evaluate(run)
  write_results(args, run, result)
  return 0 if passed(result["accuracy"], run.target) else 1

if __name__ == "__main__":
  sys.modules.setdefault("audio_classify", sys.modules["__main__"])     # audio_bench imports this file: one module, not a second copy
  sys.exit(common.run_main(main))
