"""Tests for audio-ml/audio_classify.py and its front end audio-ml/logmel.py on tinygrad's CPU device.

The log-mel front end is checked against a float64 reference written here from the formulas
(explicit frames, np.fft.rfft, a filterbank built by np.interp), with torchaudio's tolerance against
librosa (atol 5e-4, rtol 1e-5); against librosa itself where it is installed (a test-only extra).
"""
import json, os, subprocess, sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("DEV", "CPU")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "audio-ml" / "audio_classify.py"
sys.path[:0] = [str(ROOT), str(SCRIPT.parent)]
import audio_classify as ac            # noqa: E402  (imports common, then tinygrad)
import logmel as lm                    # noqa: E402  (the front end)
from tinygrad import Tensor            # noqa: E402
import common                          # noqa: E402
from common import UserError           # noqa: E402
from common.bench import validate      # noqa: E402
from conftest import bad_input         # noqa: E402

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
  assert lm.hz_to_mel(700, "htk") == pytest.approx(2595 * np.log10(2))
  assert lm.hz_to_mel(1000, "slaney") == pytest.approx(15.0)
  assert lm.hz_to_mel(6400, "slaney") == pytest.approx(42.0)          # 27 log-steps of ln(6.4)/27 above 1 kHz
  assert lm.hz_to_mel(500, "slaney") == pytest.approx(7.5)            # linear part: f / (200/3)
  f = np.array([0, 100, 999, 1000, 1001, 3000, 7999])
  for scale in ("htk", "slaney"):
    np.testing.assert_allclose(lm.mel_to_hz(lm.hz_to_mel(f, scale), scale), f, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
@pytest.mark.parametrize("norm", ["slaney", "none"])
def test_filterbank_matches_reference(scale, norm):
  cfg = lm.MelConfig(sample_rate=16000, n_fft=512, win_length=512, hop=160, n_mels=80, fmin=30.0, fmax=7600.0, mel_scale=scale, mel_norm=norm)
  np.testing.assert_allclose(lm.mel_filterbank(cfg), ref_filterbank(16000, 512, 80, 30.0, 7600.0, scale, norm), atol=1e-6, rtol=0)


def test_slaney_norm_gives_equal_areas():
  cfg = lm.MelConfig(sample_rate=16000, n_fft=4096, win_length=4096, hop=160, n_mels=40, fmin=0.0, mel_norm="slaney")
  areas = lm.mel_filterbank(cfg).sum(0) * (16000 / 4096)               # ∫ triangle df, Riemann sum in Hz
  np.testing.assert_allclose(areas, 1.0, rtol=0.02)


# ---- the tinygrad log-mel against the float64 reference -----------------------------------------

# every front end: the dense N x N DFT (conv framing) and the factored Cooley-Tukey DFT (unfold framing)
FRONTENDS = {"dense": dict(dft="dense", framing="conv"), "factored": dict(dft="factored", framing="unfold")}


# scale and norm change only the numpy filterbank (checked above): each n_fft takes one of the four pairs, with both DFTs
@pytest.mark.parametrize("dft", FRONTENDS)
@pytest.mark.parametrize("n_fft, scale, norm", [(256, "htk", "none"), (400, "htk", "slaney"), (512, "slaney", "none"), (1024, "slaney", "slaney")])
def test_mel_spectrogram_matches_rfft_reference(n_fft, scale, norm, dft):
  sr = 16000
  cfg = lm.MelConfig(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop=160, n_mels=64, fmin=0.0, fmax=8000.0, mel_scale=scale, mel_norm=norm)
  x = probe_signals(sr)
  got = lm.LogMel(replace(cfg, **FRONTENDS[dft])).mel(Tensor(x)).numpy()
  np.testing.assert_allclose(got, ref_mel_spectrogram(x, sr, n_fft, 160, 64, 0.0, 8000.0, scale, norm), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("dft", FRONTENDS)
@pytest.mark.parametrize("kw", [dict(win_length=300, window="hamming"), dict(power=1.0), dict(center=False)])
def test_window_power_and_center_options(kw, dft):
  sr = 8000
  cfg = lm.MelConfig(sample_rate=sr, n_fft=400, hop=100, n_mels=40, fmin=20.0, mel_scale="htk", mel_norm="none", **{"win_length": 400, **kw})
  x = probe_signals(sr, 3000)
  expected = ref_mel_spectrogram(x, sr, 400, 100, 40, 20.0, 4000.0, "htk", "none", **kw)
  np.testing.assert_allclose(lm.LogMel(replace(cfg, **FRONTENDS[dft])).mel(Tensor(x)).numpy(), expected, atol=ATOL, rtol=RTOL)


def test_framings_agree_and_log_floor():
  cfg = lm.MelConfig(sample_rate=8000, n_fft=256, win_length=200, hop=80, n_mels=40)
  x = probe_signals(8000, 2000)
  x[1] = 0                                                             # digital silence hits the floor
  outs = {f: lm.LogMel(replace(cfg, dft="dense", framing=f))(Tensor(x)).numpy() for f in lm.LogMel.FRAMINGS}
  outs.update({f"{f} factored": lm.LogMel(replace(cfg, dft="factored", framing=f))(Tensor(x)).numpy() for f in ("unfold", "gather")})
  for f, o in outs.items():
    assert o.shape == (2, 40, cfg.n_frames(2000)), f
    np.testing.assert_allclose(o, outs["conv"], atol=2e-3, rtol=1e-4, err_msg=f)
  np.testing.assert_allclose(outs["conv"][1], np.log(cfg.log_floor), rtol=1e-6)
  db = lm.LogMel(replace(cfg, log="db"))(Tensor(x)).numpy()
  np.testing.assert_allclose(db[0], 10 * np.log10(np.exp(outs["conv"][0])), atol=1e-3)


def test_matches_librosa():
  librosa = pytest.importorskip("librosa", reason="librosa is a test-only extra")
  sr, x = 16000, probe_signals(16000).astype(np.float64)
  for n_fft, scale, norm in [(512, "htk", None), (400, "slaney", "slaney"), (1024, "slaney", None)]:
    cfg = lm.MelConfig(sample_rate=sr, n_fft=n_fft, win_length=n_fft, hop=160, n_mels=64, fmin=0.0, fmax=8000.0,
                       mel_scale=scale, mel_norm=norm or "none")
    np.testing.assert_allclose(lm.mel_filterbank(cfg).T, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=64, fmin=0.0, fmax=8000.0,
                                                                             htk=scale == "htk", norm=norm, dtype=np.float64), atol=1e-6)
    expected = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft, hop_length=160, window="hann", center=True, pad_mode="reflect",
                                              power=2.0, n_mels=64, fmin=0.0, fmax=8000.0, htk=scale == "htk", norm=norm)
    for kw in FRONTENDS.values():
      np.testing.assert_allclose(lm.LogMel(replace(cfg, **kw)).mel(Tensor(x.astype(np.float32))).numpy(), expected, atol=ATOL, rtol=RTOL)


def test_dft_factors_and_factored_framing():
  assert lm.dft_factors(512) == (32, 16) and lm.dft_factors(400) == (20, 20) and lm.dft_factors(256) == (16, 16)
  assert lm.dft_factors(320) == (20, 16)
  cfg = lm.MelConfig(sample_rate=8000, n_fft=256, win_length=200, hop=80, n_mels=40)
  with pytest.raises(lm.UserError, match="unfold or gather"): lm.LogMel(replace(cfg, dft="factored", framing="conv"))
  # the stage-2 output covers k = 0 … N/2 exactly once: the reordered filterbank holds every row of fb
  n1, n2 = lm.dft_factors(cfg.n_fft)
  _, stage2, fb_k = lm.factored_dft_bases(cfg, n1, n2)
  assert stage2.shape == (n1, 2 * n2, 2 * ((cfg.n_fft // 2) // n1 + 1))
  np.testing.assert_allclose(np.sort(fb_k.sum(1))[-cfg.n_freqs:], np.sort(lm.mel_filterbank(cfg).sum(1)))
  # an odd N1 (250 = 25·10): the conjugate half of stage 1 is one bin shorter than the computed half
  odd = lm.MelConfig(sample_rate=8000, n_fft=250, win_length=250, hop=80, n_mels=40)
  x = Tensor(probe_signals(8000, 2000))
  np.testing.assert_allclose(lm.LogMel(odd).mel(x).numpy(), lm.LogMel(replace(odd, dft="dense", framing="conv")).mel(x).numpy(), atol=ATOL, rtol=1e-4)


# ---- resampling ----------------------------------------------------------------------------------

def tone(freq, sr, seconds=0.5):
  return np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 8000), (8000, 16000), (48000, 22050)])
def test_resample_keeps_a_passband_tone(sr_in, sr_out):
  y = lm.resample(tone(1000, sr_in), sr_in, sr_out)
  assert len(y) == round(len(tone(1000, sr_in)) * sr_out / sr_in)
  inner = slice(len(y) // 8, -len(y) // 8)                             # away from the zero-padded ends
  np.testing.assert_allclose(y[inner], tone(1000, sr_out)[:len(y)][inner], atol=0.01)


def test_resample_does_not_alias():
  """6 kHz is above the 4 kHz Nyquist of 8 kHz: it must vanish, not fold down to 2 kHz.
  Plain decimation by linear interpolation (the baseline) does fold it at full level."""
  x = tone(6000, 44100)
  y = lm.resample(x, 44100, 8000)
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
  """The scan and the stratified split are common.datasets'; FSDD's file names and takes-0-4 test set
  are the project's rule on top, and a class the rule leaves on one side only is one line."""
  for digit in "01":
    for take in range(8): write_wav(tmp_path / "fsdd" / f"{digit}_alice_{take}.wav", 0.5 * tone(300 + 100 * take, 8000, 0.2))
  files, labels, test, how = ac.labelled_split(tmp_path / "fsdd", np.random.default_rng(0))
  assert labels == ["0"] * 8 + ["1"] * 8 and "takes 0-4" in how
  assert sorted(int(p.stem.split("_")[2]) for p, t in zip(files, test) if t) == sorted(list(range(5)) * 2)
  for cls in ("dog", "cat"):
    for i in range(5): write_wav(tmp_path / "sub" / cls / f"{i}.flac", 0.5 * tone(500, 16000, 0.1), 16000)
  files, labels, test, how = ac.labelled_split(tmp_path / "sub", np.random.default_rng(0))
  assert "sub-folder" in how and {lab for lab, t in zip(labels, test) if t} == {"dog", "cat"} and test.sum() == 2
  for take in range(3): write_wav(tmp_path / "early" / f"7_bob_{take}.wav", 0.5 * tone(400, 8000, 0.2))
  write_wav(tmp_path / "early" / "8_bob_9.wav", 0.5 * tone(400, 8000, 0.2))
  with pytest.raises(UserError, match="class '7' has only test"): ac.labelled_split(tmp_path / "early", np.random.default_rng(0))


def test_load_audio_mixes_resamples_and_fixes_length(tmp_path):
  t = np.arange(22050) / 22050
  stereo = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)], 1)
  x = ac.load_audio(write_wav(tmp_path / "s.wav", stereo, 22050), 8000, 6000)
  assert x.shape == (6000,) and np.abs(x).max() == pytest.approx(0.9, abs=1e-3)
  with pytest.raises(UserError, match="silent"): ac.load_audio(write_wav(tmp_path / "z.wav", np.zeros(800)), 8000, 8000)
  (tmp_path / "bad.wav").write_text("not audio")
  with pytest.raises(UserError, match="cannot be read"): ac.load_audio(tmp_path / "bad.wav", 8000, 8000)


def test_audio_files_go_through_the_common_reader(tmp_path, capsys):
  """read_audio warns about a float file far above full scale (the old private reader was silent) and
  refuses NaN; resampling computes only the samples kept (the same values as resampling everything)."""
  import soundfile as sf
  sf.write(tmp_path / "loud.wav", (300 * tone(500, 8000, 0.5)).astype(np.float32), 8000, subtype="FLOAT")
  assert ac.load_audio(tmp_path / "loud.wav", 8000, 4000, peak_normalize=False).max() > 100
  assert "above full scale" in capsys.readouterr().err
  x = tone(700, 44100, 0.5)
  np.testing.assert_array_equal(lm.resample(x, 44100, 8000, max_out=1000), lm.resample(x, 44100, 8000)[:1000])


def test_spec_augment_masks_one_band_and_one_span():
  x = Tensor(np.arange(2 * 40 * 101, dtype=np.float32).reshape(2, 40, 101))
  out = ac.spec_augment(x, max_freq=8, max_time=20).numpy()
  for b in range(2):
    changed = out[b] != x.numpy()[b]
    rows, cols = changed.all(1), changed.all(0)                        # fully masked channels / frames
    assert rows.sum() < 8 and cols.sum() < 20
    assert (changed == (rows[:, None] | cols[None, :])).all()


# ---- configuration: one source of truth, presets that change defaults only ---------------------------

def test_cli_defaults_are_the_config_dataclasses():
  """LogMel's defaults used to differ from the CLI's (conv framing, dense DFT vs unfold, factored)."""
  args = ac.parse_args([])
  assert ac.frontend_config(args) == lm.MelConfig() and ac.train_config(args) == ac.TrainConfig()
  frontend = lm.LogMel(lm.MelConfig())
  assert (frontend.dft, frontend.framing) == ("factored", "unfold") == (args.dft, args.framing)
  assert lm.MelConfig().win_length == 200 == round(0.025 * lm.MelConfig().sample_rate)    # 25 ms, as --help says


def test_quick_never_overrides_a_typed_flag():
  quick = ac.parse_args(["--quick"])
  assert (quick.hop, quick.widths, quick.steps, quick.batch, quick.target) == (160, [8, 16, 32], 100, 32, 80)
  typed = ac.parse_args(["--quick", "--hop", "80", "--widths", "4,8", "--steps", "7", "--target", "90"])
  assert (typed.hop, typed.widths, typed.steps, typed.batch, typed.target) == (80, [4, 8], 7, 32, 90)
  assert ac.parse_args(["--steps", "7", "--quick"]).steps == 7


# ---- bad input: one line, exit 2, before the work ---------------------------------------------------------

def refused(capsys, *argv, fragments=()):
  """In-process main(argv) under run_main: exit 2, exactly one line on stderr, no traceback. -> the line."""
  try: code = common.run_main(lambda: ac.main([str(a) for a in argv]), open_device=False)
  except SystemExit as e: code = e.code
  out = capsys.readouterr()
  lines = [ln for ln in out.err.splitlines() if ln.strip() and not ln.startswith("warning:")]
  assert code == 2 and len(lines) == 1 and "Traceback" not in out.err, (argv, code, out.err[-1500:])
  for f in fragments: assert f in lines[0], (f, lines[0])
  assert "data:" not in out.out and "model:" not in out.out, ("work started before the refusal", out.out)
  return lines[0]


@pytest.mark.parametrize("argv, fragment", [
  (["--target", "nan"], "not a finite number"), (["--lr", "inf"], "not a finite number"), (["--clip-seconds", "inf"], "not a finite"),
  (["--fmin", "nan"], "not a finite"), (["--log-floor", "-1"], "must be > 0"), (["--target", "150"], "between 0 and 100"),
  (["--power", "nan"], "not a finite"), (["--steps", "0"], "must be > 0"), (["--widths", "8,0"], "positive integers"),
  (["--n-fft", "255"], "must be even"), (["--win-length", "300"], "--win-length 300"), (["--hop", "300"], "must not exceed"),
  (["--fmax", "5000"], "--fmax"), (["--n-mels", "500"], "exceeds the 129 DFT bins"), (["--framing", "conv"], "unfold or gather"),
  (["--n-fft", "2", "--win-length", "2", "--hop", "1", "--n-mels", "1"], "prime"), (["--clip-seconds", "0.01"], "not more than --n-fft"),
  (["--widths", "8,8,8,8,8,8,8"], "too small for 7 pooling blocks"), (["--cases", "bogus"], "choose from"),
])
def test_impossible_numbers_are_one_line(capsys, argv, fragment):
  refused(capsys, *argv, fragments=(fragment,))


@pytest.mark.parametrize("argv, fragment", [
  (["--cases", "logmel"], "--cases does nothing without --bench"),
  (["--bench", "--steps", "5"], "--steps does nothing with --bench"),
  (["--bench", "--save", "{tmp}/m.safetensors"], "--save does nothing with --bench"),
  (["--load", "{ckpt}", "--save", "{tmp}/m.safetensors"], "--save does nothing with --load"),
  (["--load", "{ckpt}", "--steps", "5"], "--steps does nothing with --load"),
  (["--load", "{ckpt}", "--file", "{wav}", "--n-fft", "512"], "--n-fft does nothing with --file"),
  (["--load", "{ckpt}", "--file", "{wav}", "--save", "{tmp}/m.safetensors"], "--save does nothing with --file"),
  (["--data", "{tmp}", "--train-clips", "100"], "with --data the folder's files"),
])
def test_flags_that_would_be_ignored_are_refused(capsys, tmp_path, tiny_checkpoint, argv, fragment):
  """--save used to be ignored silently with --load and in modes that train nothing."""
  wav = write_wav(tmp_path / "a.wav", 0.3 * tone(440, 8000))
  refused(capsys, *[a.format(tmp=tmp_path, ckpt=tiny_checkpoint, wav=wav) for a in argv], fragments=(fragment,))


def test_flags_common_tools_pass_are_accepted(tmp_path):
  """common.compare runs `--bench --json PATH --out DIR`, and common's own flags mean the same in every mode."""
  ac.check_request(ac.parse_args(["--bench", "--json", str(tmp_path / "b.json"), "--out", str(tmp_path), "--seed", "1"]))
  ac.check_request(ac.parse_args(["--load", "x.safetensors", "--quick", "--json", str(tmp_path / "e.json")]))


def test_outputs_are_checked_before_the_work(capsys, tmp_path):
  (tmp_path / "afile").write_text("x")
  refused(capsys, "--quick", "--out", tmp_path / "afile", fragments=("--out", "not a folder"))
  refused(capsys, "--quick", "--out", "/proc/audio-out", fragments=("--out /proc/audio-out cannot be written",))
  refused(capsys, "--quick", "--save", tmp_path, fragments=("--save", "is a folder"))
  refused(capsys, "--quick", "--json", "/dev/null", fragments=("--json /dev/null", "not a regular file"))
  refused(capsys, "--quick", "--json", "/sys/x.json", fragments=("--json /sys/x.json cannot be written",))
  wav = write_wav(tmp_path / "a.wav", 0.3 * tone(440, 8000))
  refused(capsys, "--file", wav, "--visualize", "--out", tmp_path / "afile", fragments=("--out", "not a folder"))


def test_sizes_that_cannot_fit_are_refused_before_training(capsys, monkeypatch):
  """--batch 100000 used to train on the 4000 clips and then fail with ENOMEM padding the evaluation."""
  refused(capsys, "--batch", "100000", fragments=("--batch 100000 is larger than the 4000 training clips",))
  refused(capsys, "--clip-seconds", "1e6", fragments=("the clips would need about", "GiB, more than this machine's"))
  monkeypatch.setattr(ac, "physical_memory", lambda: 1 << 30)            # a 1 GiB machine
  refused(capsys, "--widths", "256", fragments=("one training step of 64 clips", "more than this machine's 1.0 GiB", "smaller --batch"))


def test_a_target_a_constant_answer_reaches_is_refused(capsys):
  refused(capsys, "--quick", "--target", "10", fragments=("not above the 10.0 % that always answering '", "cannot fail"))


def test_folder_problems_are_one_line(capsys, tmp_path):
  (tmp_path / "empty").mkdir()
  refused(capsys, "--data", tmp_path / "empty", fragments=("no files of type",))
  for i in range(3): write_wav(tmp_path / "one" / "dog" / f"{i}.wav", 0.5 * tone(400 + 50 * i, 8000))
  refused(capsys, "--data", tmp_path / "one", fragments=("only one class",))
  for i in range(3): write_wav(tmp_path / "few" / "yes" / f"{i}.wav", 0.5 * tone(300 + 50 * i, 8000))
  for i in range(3): write_wav(tmp_path / "few" / "no" / f"{i}.wav", 0.5 * tone(900 + 50 * i, 8000))
  refused(capsys, "--data", tmp_path / "few", fragments=("--batch 64 is larger than the 4 training clips",))


# ---- checkpoints ------------------------------------------------------------------------------------------

def save_untrained(dest, drop=(), **meta):
  """A checkpoint laid out as a training run writes it, of an untrained (4, 8) model (no training);
  `meta` overrides metadata fields, `drop` leaves some out."""
  from common.files import save_checkpoint
  cfg, widths = lm.MelConfig(hop=160), [4, 8]
  model = ac.AudioCNN(len(ac.SYNTH_CLASSES), widths, cfg.n_mels)
  meta = {"labels": list(ac.SYNTH_CLASSES), "widths": widths, "frontend": ac.asdict(cfg), "clip_seconds": 1.0, "peak_normalize": False,
          "data": "synthetic", **meta}
  save_checkpoint(ac.get_state_dict(model), dest, {k: v for k, v in meta.items() if k not in drop}, script=ac.SCRIPT_ID, model=ac.MODEL_ID)
  return dest


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
  return save_untrained(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_checkpoint_metadata_problems_are_one_line(capsys, tmp_path):
  """A checkpoint whose metadata lacked a field used to end in KeyError / TypeError."""
  wav = write_wav(tmp_path / "a.wav", 0.3 * tone(440, 8000))
  frontend = ac.asdict(lm.MelConfig(hop=160))
  cases = {"no_widths": (dict(drop=("widths",)), "metadata lacks 'widths'"),
           "no_frontend": (dict(drop=("frontend",)), "metadata lacks 'frontend'"),
           "widths_text": (dict(widths="abc"), "'widths' is not a list of positive integers"),
           "labels_numbers": (dict(labels=[1, 2]), "'labels' is not a list"),
           "no_n_fft": (dict(frontend={k: v for k, v in frontend.items() if k != "n_fft"}), "front-end metadata lacks 'n_fft'"),
           "n_fft_text": (dict(frontend={**frontend, "n_fft": "x"}), "n_fft = 'x' is not of type int"),
           "unknown_field": (dict(frontend={**frontend, "bogus": 1}), "'bogus' is unknown"),
           "odd_n_fft": (dict(frontend={**frontend, "n_fft": 255}), "--n-fft 255 must be even"),
           "clip_negative": (dict(clip_seconds=-1), "'clip_seconds' is not a positive number"),
           "other_shapes": (dict(widths=[4, 16]), "'convs.1.weight' has shape (8, 4, 3, 3), expected (16, 4, 3, 3)")}
  for name, (kw, fragment) in cases.items():
    refused(capsys, "--load", save_untrained(tmp_path / f"{name}.safetensors", **kw), "--file", wav, fragments=(fragment,))
  from common.files import save_checkpoint
  save_checkpoint({"w": Tensor.ones(2)}, tmp_path / "gen.safetensors", {}, script="generative/generative_models.py", model="ddpm")
  refused(capsys, "--load", tmp_path / "gen.safetensors", "--file", wav, fragments=("written by generative/generative_models.py",))


@pytest.mark.noopt
@pytest.mark.slow
def test_untrained_model_fails_the_check(tmp_path, tiny_checkpoint):
  """The success check is one a broken model fails: untrained weights score near chance, exit 1."""
  r = run("--load", tiny_checkpoint, "--test-clips", "50", "--out", tmp_path, timeout=300)
  assert r.returncode == 1 and "FAIL: held-out accuracy" in r.stdout, r.stdout[-1500:] + r.stderr[-1500:]
  assert json.loads((tmp_path / "summary.json").read_text())["test_accuracy_pct"] < 50


# ---- the script end to end (subprocesses, as a user runs it) ----------------------------------------------

def run(*args, timeout=900):      # generous: a loaded shared CPU is many times slower than an idle one
  env = {**os.environ, "DEV": os.environ.get("DEV", "CPU")}
  return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_bad_input_through_the_real_command_line(tmp_path, tiny_checkpoint):
  bad_input(str(SCRIPT), "--quick", "--target", "nan", fragments=("--target", "not a finite number"))
  bad_input(str(SCRIPT), "--file", str(tmp_path / "recording.wav"), fragments=("recording.wav: no such file",))
  (tmp_path / "junk.wav").write_bytes(b"RIFF????WAVEjunk")
  bad_input(str(SCRIPT), "--load", str(tiny_checkpoint), "--file", str(tmp_path / "junk.wav"), fragments=("junk.wav cannot be read",))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  """The documented default run, with --quick: it trains, checks, and saves its model under --out."""
  out = tmp_path_factory.mktemp("quick")
  return run("--quick", "--out", out, "--save", out / "copy.safetensors", "--json", out / "train.json"), out


@pytest.mark.slow
def test_quick_run_trains_passes_and_saves_under_out(quick_run):
  r, out = quick_run
  assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
  assert "PASS: held-out accuracy" in r.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["test_accuracy_pct"] >= 80 and summary["target_pct"] == 80 and summary["final_train_loss"] < 1.0
  for name in ("curves.png", "confusion.png", "model.safetensors", "copy.safetensors"): assert (out / name).stat().st_size > 1000
  records = validate(json.loads((out / "train.json").read_text()))                 # --json outside --bench: this run's timings
  assert [rec["case"] for rec in records] == ["train step b=32", "classify (log-mel+CNN) b=32"]
  assert len(records[0]["samples_ms"]) == 98 and len(records[0]["warmup_ms"]) == 2


@pytest.mark.noopt
@pytest.mark.slow
def test_documented_file_command_uses_the_model_under_out(quick_run, tmp_path):
  """`--file recording.wav` without --load: the model the default run saved under --out, said in one line."""
  _, out = quick_run
  wav = write_wav(tmp_path / "recording.wav", np.stack([0.3 * tone(700, 44100, 1.0)] * 2, 1), 44100)    # stereo, 44.1 kHz
  r = run("--file", wav, "--quick", "--out", out, "--visualize", "--json", tmp_path / "file.json")
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines()[0].startswith(f"model: {out / 'model.safetensors'}, saved by the last training run")
  lines = [ln for ln in r.stdout.splitlines() if ln.strip().endswith("%")]
  assert len(lines) == 3 and all(ln.split()[0] in ac.SYNTH_CLASSES for ln in lines)
  probs = [float(ln.split()[-2]) for ln in lines]
  assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.05
  assert (out / "visualize.png").stat().st_size > 1000
  assert validate(json.loads((tmp_path / "file.json").read_text()))[0]["case"] == "classify file (log-mel+CNN) b=1"
  r = run("--file", wav, "--out", tmp_path / "nothing-here")
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and len(lines) == 1 and "does not exist: run `python3 audio-ml/audio_classify.py --out" in lines[0], r.stderr


@pytest.mark.noopt
@pytest.mark.slow
def test_documented_bench_command(tmp_path):
  """`python3 audio-ml/audio_classify.py --bench` (with --quick): a table, and --json that validates."""
  r = run("--bench", "--quick", "--json", tmp_path / "bench.json")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "| case |" in r.stdout and "real-time factor" in r.stdout
  records = validate(json.loads((tmp_path / "bench.json").read_text()))
  cases = {rec["case"] for rec in records}
  assert {"log-mel conv b=1", "log-mel unfold factored b=8", "numpy rfft log-mel b=1", "classify (log-mel+CNN) b=1"} <= cases
  assert all(rec["realtime_x"] > 0 for rec in records)
  assert all(rec["max_abs_err_vs_numpy"] < 1e-3 for rec in records if "max_abs_err_vs_numpy" in rec)
