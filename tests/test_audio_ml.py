"""Tests for audio-ml/audio_classify.py on tinygrad's CPU device.

The log-mel front end is checked against a float64 reference written here from the formulas
(explicit frames, np.fft.rfft, a filterbank built by np.interp), with torchaudio's tolerance against
librosa (atol 5e-4, rtol 1e-5); against librosa itself where it is installed (a test-only extra).
"""
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("DEV", "CPU")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "audio-ml" / "audio_classify.py"
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(SCRIPT.parent))
import audio_classify as ac            # noqa: E402  (imports common, then tinygrad)
from tinygrad import Tensor            # noqa: E402
from common import UserError           # noqa: E402

ATOL, RTOL = 5e-4, 1e-5                # torchaudio's MelSpectrogram-vs-librosa tolerance


# ---- an independent float64 reference ----------------------------------------------------------

def ref_mel_hz(scale):
  """(hz->mel, mel->hz) written out again from the definitions."""
  if scale == "htk":
    return (lambda f: 2595 * np.log10(1 + np.asarray(f, float) / 700)), (lambda m: 700 * (10 ** (np.asarray(m, float) / 2595) - 1))
  def to_mel(f):
    f = np.asarray(f, float)
    return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))
  def to_hz(m):
    m = np.asarray(m, float)
    return np.where(m < 15, 200 * m / 3, 1000 * 6.4 ** ((m - 15) / 27))
  return to_mel, to_hz


def ref_filterbank(sr, n_fft, n_mels, fmin, fmax, scale, norm):
  """One triangle at a time with np.interp -> (n_freqs, n_mels)."""
  to_mel, to_hz = ref_mel_hz(scale)
  edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
  freqs = np.fft.rfftfreq(n_fft, 1 / sr)
  fb = np.zeros((len(freqs), n_mels))
  for m in range(n_mels):
    lo, c, hi = edges[m:m + 3]
    fb[:, m] = np.interp(freqs, [lo, c, hi], [0, 1, 0], left=0, right=0)
    if norm == "slaney": fb[:, m] *= 2 / (hi - lo)
  return fb


def ref_mel_spectrogram(x, sr, n_fft, hop, n_mels, fmin, fmax, scale, norm, win_length=None, window="hann", center=True, power=2):
  win_length = win_length or n_fft
  n = np.arange(win_length)
  w = {"hann": np.hanning(win_length + 1)[:-1], "hamming": 0.54 - 0.46 * np.cos(2 * np.pi * n / win_length)}[window]
  w = np.pad(w, ((n_fft - win_length) // 2, n_fft - win_length - (n_fft - win_length) // 2))
  x = np.asarray(x, np.float64)
  if center: x = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
  frames = np.stack([x[:, t:t + n_fft] for t in range(0, x.shape[1] - n_fft + 1, hop)], axis=1)     # (B, T, N)
  spec = np.abs(np.fft.rfft(frames * w, axis=-1)) ** power
  return np.einsum("btf,fm->bmt", spec, ref_filterbank(sr, n_fft, n_mels, fmin, fmax, scale, norm))


def probe_signals(sr, n=4000, seed=0):
  t = np.arange(n) / sr
  rng = np.random.default_rng(seed)
  return np.stack([0.8 * np.sin(2 * np.pi * 440 * t + 0.3), 0.3 * rng.standard_normal(n)]).astype(np.float32)


# ---- mel scale and filterbank ------------------------------------------------------------------

def test_mel_scales_closed_form():
  assert ac.hz_to_mel(700, "htk") == pytest.approx(2595 * np.log10(2))
  assert ac.hz_to_mel(1000, "slaney") == pytest.approx(15.0)
  assert ac.hz_to_mel(6400, "slaney") == pytest.approx(42.0)          # 27 log-steps of ln(6.4)/27 above 1 kHz
  assert ac.hz_to_mel(500, "slaney") == pytest.approx(7.5)            # linear part: f / (200/3)
  f = np.array([0, 100, 999, 1000, 1001, 3000, 7999])
  for scale in ("htk", "slaney"):
    np.testing.assert_allclose(ac.mel_to_hz(ac.hz_to_mel(f, scale), scale), f, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
@pytest.mark.parametrize("norm", ["slaney", "none"])
def test_filterbank_matches_reference(scale, norm):
  cfg = ac.MelConfig(sample_rate=16000, n_fft=512, win_length=512, hop=160, n_mels=80, fmin=30.0, fmax=7600.0, mel_scale=scale, mel_norm=norm)
  np.testing.assert_allclose(ac.mel_filterbank(cfg), ref_filterbank(16000, 512, 80, 30.0, 7600.0, scale, norm), atol=1e-6, rtol=0)


def test_slaney_norm_gives_equal_areas():
  cfg = ac.MelConfig(sample_rate=16000, n_fft=4096, win_length=4096, hop=160, n_mels=40, fmin=0.0, mel_norm="slaney")
  areas = ac.mel_filterbank(cfg).sum(0) * (16000 / 4096)               # ∫ triangle df, Riemann sum in Hz
  np.testing.assert_allclose(areas, 1.0, rtol=0.02)


# ---- the tinygrad log-mel against the float64 reference -----------------------------------------

# every front end: the dense N x N DFT (conv framing) and the factored Cooley-Tukey DFT (unfold framing)
FRONTENDS = {"dense": dict(framing="conv"), "factored": dict(framing="unfold", dft="factored")}


@pytest.mark.parametrize("dft", FRONTENDS)
@pytest.mark.parametrize("n_fft", [256, 400, 512, 1024])
@pytest.mark.parametrize("scale,norm", [("htk", "none"), ("htk", "slaney"), ("slaney", "none"), ("slaney", "slaney")])
def test_mel_spectrogram_matches_rfft_reference(n_fft, scale, norm, dft):
  sr = 16000
  cfg = ac.MelConfig(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop=160, n_mels=64, fmin=0.0, fmax=8000.0, mel_scale=scale, mel_norm=norm)
  x = probe_signals(sr)
  got = ac.LogMel(cfg, **FRONTENDS[dft]).mel(Tensor(x)).numpy()
  np.testing.assert_allclose(got, ref_mel_spectrogram(x, sr, n_fft, 160, 64, 0.0, 8000.0, scale, norm), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("dft", FRONTENDS)
@pytest.mark.parametrize("kw", [dict(win_length=300, window="hamming"), dict(power=1.0), dict(center=False)])
def test_window_power_and_center_options(kw, dft):
  sr = 8000
  cfg = ac.MelConfig(sample_rate=sr, n_fft=400, hop=100, n_mels=40, fmin=20.0, mel_scale="htk", mel_norm="none", **{"win_length": 400, **kw})
  x = probe_signals(sr, 3000)
  expected = ref_mel_spectrogram(x, sr, 400, 100, 40, 20.0, 4000.0, "htk", "none", **kw)
  np.testing.assert_allclose(ac.LogMel(cfg, **FRONTENDS[dft]).mel(Tensor(x)).numpy(), expected, atol=ATOL, rtol=RTOL)


def test_framings_agree_and_log_floor():
  cfg = ac.MelConfig(sample_rate=8000, n_fft=256, win_length=200, hop=80, n_mels=40)
  x = probe_signals(8000, 2000)
  x[1] = 0                                                             # digital silence hits the floor
  outs = {f: ac.LogMel(cfg, f)(Tensor(x)).numpy() for f in ac.LogMel.FRAMINGS}
  outs.update({f"{f} factored": ac.LogMel(cfg, f, dft="factored")(Tensor(x)).numpy() for f in ("unfold", "gather")})
  for f, o in outs.items():
    assert o.shape == (2, 40, cfg.n_frames(2000)), f
    np.testing.assert_allclose(o, outs["conv"], atol=2e-3, rtol=1e-4, err_msg=f)
  np.testing.assert_allclose(outs["conv"][1], np.log(cfg.log_floor), rtol=1e-6)
  db = ac.LogMel(ac.MelConfig(**{**cfg.__dict__, "log": "db"}))(Tensor(x)).numpy()
  np.testing.assert_allclose(db[0], 10 * np.log10(np.exp(outs["conv"][0])), atol=1e-3)


def test_matches_librosa():
  librosa = pytest.importorskip("librosa", reason="librosa is a test-only extra")
  sr, x = 16000, probe_signals(16000).astype(np.float64)
  for n_fft, scale, norm in [(512, "htk", None), (400, "slaney", "slaney"), (1024, "slaney", None)]:
    cfg = ac.MelConfig(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop=160, n_mels=64, fmin=0.0, fmax=8000.0,
                       mel_scale=scale, mel_norm=norm or "none")
    np.testing.assert_allclose(ac.mel_filterbank(cfg).T, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=64, fmin=0.0, fmax=8000.0,
                                                                             htk=scale == "htk", norm=norm, dtype=np.float64), atol=1e-6)
    expected = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft, hop_length=160, window="hann", center=True, pad_mode="reflect",
                                              power=2.0, n_mels=64, fmin=0.0, fmax=8000.0, htk=scale == "htk", norm=norm)
    for kw in FRONTENDS.values():
      np.testing.assert_allclose(ac.LogMel(cfg, **kw).mel(Tensor(x.astype(np.float32))).numpy(), expected, atol=ATOL, rtol=RTOL)


def test_dft_factors_and_factored_framing():
  assert ac.dft_factors(512) == (32, 16) and ac.dft_factors(400) == (20, 20) and ac.dft_factors(256) == (16, 16)
  assert ac.dft_factors(320) == (20, 16)
  cfg = ac.MelConfig(sample_rate=8000, n_fft=256, win_length=200, hop=80, n_mels=40)
  with pytest.raises(ac.UserError, match="unfold or gather"): ac.LogMel(cfg, "conv", dft="factored")
  # the stage-2 output covers k = 0 … N/2 exactly once: the reordered filterbank holds every row of fb
  n1, n2 = ac.dft_factors(cfg.n_fft)
  _, stage2, fb_k = ac.factored_dft_bases(cfg, n1, n2)
  assert stage2.shape == (n1, 2 * n2, 2 * ((cfg.n_fft // 2) // n1 + 1))
  np.testing.assert_allclose(np.sort(fb_k.sum(1))[-cfg.n_freqs:], np.sort(ac.mel_filterbank(cfg).sum(1)))
  # an odd N1 (250 = 25·10): the conjugate half of stage 1 is one bin shorter than the computed half
  odd = ac.MelConfig(sample_rate=8000, n_fft=250, win_length=250, hop=80, n_mels=40)
  x = Tensor(probe_signals(8000, 2000))
  np.testing.assert_allclose(ac.LogMel(odd, "unfold", dft="factored").mel(x).numpy(), ac.LogMel(odd, "conv").mel(x).numpy(), atol=ATOL, rtol=1e-4)


# ---- resampling ----------------------------------------------------------------------------------

def tone(freq, sr, seconds=0.5):
  return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 8000), (8000, 16000), (48000, 22050)])
def test_resample_keeps_a_passband_tone(sr_in, sr_out):
  y = ac.resample(tone(1000, sr_in), sr_in, sr_out)
  assert len(y) == round(len(tone(1000, sr_in)) * sr_out / sr_in)
  inner = slice(len(y) // 8, -len(y) // 8)                             # away from the zero-padded ends
  np.testing.assert_allclose(y[inner], tone(1000, sr_out)[:len(y)][inner], atol=0.01)


def test_resample_does_not_alias():
  """6 kHz is above the 4 kHz Nyquist of 8 kHz: it must vanish, not fold down to 2 kHz.
  Plain decimation by linear interpolation (the baseline) does fold it at full level."""
  x = tone(6000, 44100)
  y = ac.resample(x, 44100, 8000)
  inner = y[len(y) // 8: -len(y) // 8]
  assert np.sqrt(np.mean(inner ** 2)) < 1e-3 * np.sqrt(0.5)            # >= 60 dB down
  naive = np.interp(np.arange(len(y)) * 44100 / 8000, np.arange(len(x)), x)
  assert np.sqrt(np.mean(naive[len(y) // 8: -len(y) // 8] ** 2)) > 0.3


# ---- data --------------------------------------------------------------------------------------

def test_synthetic_classes_are_distinct_and_seeded():
  rng = np.random.default_rng(1)
  x, y = ac.synth_dataset(40, rng, 8000, 8000)
  assert x.shape == (40, 8000) and x.dtype == np.float32 and np.isfinite(x).all()
  assert sorted(set(y.tolist())) == list(range(len(ac.SYNTH_CLASSES)))
  rms_db = 20 * np.log10(np.sqrt((x ** 2).mean(1)))
  assert rms_db[y == 0].max() < -35 and rms_db[y != 0].min() > -45   # silence is only background
  x2, _ = ac.synth_dataset(40, np.random.default_rng(1), 8000, 8000)
  np.testing.assert_array_equal(x, x2)


def write_wav(path, x, sr=8000):
  import soundfile as sf
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(str(path), np.asarray(x, np.float32), sr)
  return path


def test_folder_labels_and_splits(tmp_path):
  for digit in "01":
    for take in range(8): write_wav(tmp_path / "fsdd" / f"{digit}_alice_{take}.wav", 0.5 * tone(300 + 100 * take, 8000, 0.2))
  items, how = ac.scan_folder(tmp_path / "fsdd")
  test, name = ac.split_files(items, how, np.random.default_rng(0))
  assert how == "file name" and "takes 0-4" in name
  assert sorted(int(p.stem.split("_")[2]) for (p, _), t in zip(items, test) if t) == sorted(list(range(5)) * 2)
  for cls in ("dog", "cat"):
    for i in range(5): write_wav(tmp_path / "sub" / cls / f"{i}.flac", 0.5 * tone(500, 16000, 0.1), 16000)
  items, how = ac.scan_folder(tmp_path / "sub")
  test, _ = ac.split_files(items, how, np.random.default_rng(0))
  assert how == "sub-folder" and {lab for (_, lab), t in zip(items, test) if t} == {"dog", "cat"} and test.sum() == 2


def test_load_audio_mixes_resamples_and_fixes_length(tmp_path):
  t = np.arange(22050) / 22050
  stereo = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)], 1)
  x = ac.load_audio(write_wav(tmp_path / "s.wav", stereo, 22050), 8000, 6000)
  assert x.shape == (6000,) and np.abs(x).max() == pytest.approx(0.9, abs=1e-3)
  with pytest.raises(UserError, match="silent"): ac.load_audio(write_wav(tmp_path / "z.wav", np.zeros(800)), 8000, 8000)
  (tmp_path / "bad.wav").write_text("not audio")
  with pytest.raises(UserError, match="cannot be read"): ac.load_audio(tmp_path / "bad.wav", 8000, 8000)


def test_spec_augment_masks_one_band_and_one_span():
  x = Tensor(np.arange(2 * 40 * 101, dtype=np.float32).reshape(2, 40, 101))
  out = ac.spec_augment(x, max_freq=8, max_time=20).numpy()
  for b in range(2):
    changed = out[b] != x.numpy()[b]
    rows, cols = changed.all(1), changed.all(0)                        # fully masked channels / frames
    assert rows.sum() < 8 and cols.sum() < 20
    assert (changed == (rows[:, None] | cols[None, :])).all()


# ---- the script end to end -----------------------------------------------------------------------

def run(*args, timeout=900):      # generous: a loaded shared CPU is many times slower than an idle one
  env = {**os.environ, "DEV": os.environ.get("DEV", "CPU")}
  return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("quick")
  r = run("--quick", "--out", out, "--save", out / "model.safetensors")
  return r, out


@pytest.mark.slow
def test_quick_run_trains_and_passes(quick_run):
  r, out = quick_run
  assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
  assert "PASS: held-out accuracy" in r.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["test_accuracy_pct"] >= 80 and summary["target_pct"] == 80
  assert summary["final_train_loss"] < 1.0
  for name in ("curves.png", "confusion.png", "model.safetensors"): assert (out / name).stat().st_size > 1000


@pytest.mark.slow
def test_file_top3_and_visualize(quick_run, tmp_path):
  _, out = quick_run
  wav = write_wav(tmp_path / "tone.wav", np.stack([0.3 * tone(700, 44100, 1.0)] * 2, 1), 44100)    # stereo, 44.1 kHz
  r = run("--load", out / "model.safetensors", "--file", wav, "--visualize", "--out", tmp_path)
  assert r.returncode == 0, r.stderr
  lines = [l for l in r.stdout.splitlines() if l.strip().endswith("%")]
  assert len(lines) == 3 and all(l.split()[0] in ac.SYNTH_CLASSES for l in lines)
  probs = [float(l.split()[-2]) for l in lines]
  assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.05
  assert (tmp_path / "visualize.png").stat().st_size > 1000


@pytest.mark.slow
def test_bench_json_validates(tmp_path):
  from common.bench import validate
  r = run("--bench", "--quick", "--json", tmp_path / "bench.json")
  assert r.returncode == 0, r.stderr[-2000:]
  records = validate(json.loads((tmp_path / "bench.json").read_text()))
  cases = {rec["case"] for rec in records}
  assert {"log-mel conv b=1", "numpy rfft log-mel b=1", "classify (log-mel+CNN) b=1"} <= cases
  assert all(rec["realtime_x"] > 0 for rec in records)


def bad_inputs(tmp_path, ckpt):
  (tmp_path / "empty").mkdir()
  write_wav(tmp_path / "one" / "dog" / "a.wav", 0.5 * tone(400, 8000, 0.5))
  write_wav(tmp_path / "one" / "dog" / "b.wav", 0.5 * tone(500, 8000, 0.5))
  for cls in ("yes", "no"):
    for i in range(3): write_wav(tmp_path / "other" / cls / f"{i}.wav", 0.5 * tone(300 + 200 * i, 8000, 0.5))
  silent = write_wav(tmp_path / "silent.wav", np.zeros(4000))
  (tmp_path / "junk.wav").write_bytes(b"RIFF????WAVEjunk")
  (tmp_path / "notckpt.safetensors").write_text("hello")
  return {
    "missing file": (["--load", ckpt, "--file", tmp_path / "nope.wav"], "no such file"),
    "file without load": (["--file", silent], "--file needs --load"),
    "silent audio": (["--load", ckpt, "--file", silent], "silent"),
    "unreadable audio": (["--load", ckpt, "--file", tmp_path / "junk.wav"], "cannot be read"),
    "not a checkpoint": (["--load", tmp_path / "notckpt.safetensors", "--file", silent], "not a readable safetensors"),
    "empty folder": (["--data", tmp_path / "empty"], "no audio files"),
    "one class": (["--data", tmp_path / "one"], "only one class"),
    "other label set": (["--load", ckpt, "--data", tmp_path / "other"], "trained on labels"),
    "odd n_fft": (["--n-fft", "255"], "must be even"),
    "window longer than n_fft": (["--win-length", "300", "--n-fft", "256", "--quick"], "--win-length 300"),
    "zero steps": (["--steps", "0"], "must be > 0"),
    "fmax above nyquist": (["--fmax", "5000"], "--fmax"),
  }


@pytest.mark.slow
def test_bad_inputs_one_line_exit_2(quick_run, tmp_path):
  _, out = quick_run
  for name, (args, needle) in bad_inputs(tmp_path, out / "model.safetensors").items():
    r = run(*args, "--out", tmp_path / "o", timeout=60)
    err = r.stderr.strip()
    assert r.returncode == 2, (name, r.returncode, err[-500:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, (name, err[-500:])
    assert needle in err, (name, err)
    assert not (tmp_path / "o" / "summary.json").exists(), name
