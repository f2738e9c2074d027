"""The project-wide rules for hostile input and failed output, one test per defect class:
outputs checked before work, atomic writes (mode, SIGTERM, errno), the image and audio readers,
finite number flags, presets that never override a typed flag, checkpoints that name their writer,
out-of-memory as one line, and the shared folder loaders."""
import errno, os, signal, subprocess, sys, struct
import numpy as np
import pytest
import common  # noqa: F401
from common.cli import UserError, ArgumentParser, project_parser, run_main, finite_float, positive_float, float_range
from common.files import atomic_write, writable_dir, writable_file, read_image, read_audio, save_checkpoint, load_checkpoint, save_json
from common.datasets import scan_labelled, holdout_split, load_idx_pairs, IMAGE_SUFFIXES
from conftest import ROOT, assert_one_line_error, png_claiming


# ---- outputs: checked before the work ---------------------------------------------------------

@pytest.mark.parametrize("where, why", [("/proc/out.json", "cannot be written"), ("/sys/out.json", "cannot be written"),
                                        ("/dev/null", "not a regular file")])
def test_unwritable_output_file_is_refused(where, why):
  with pytest.raises(UserError, match=why): writable_file(where, "--json")


def test_folder_where_a_file_should_go_and_file_where_a_folder_should_go(tmp_path):
  (tmp_path / "d").mkdir()
  with pytest.raises(UserError, match="is a folder"): writable_file(tmp_path / "d", "--save")
  (tmp_path / "f").write_text("x")
  with pytest.raises(UserError, match="not a folder"): writable_dir(tmp_path / "f", "--out")
  with pytest.raises(UserError, match="cannot be written"): writable_dir(tmp_path / "f" / "sub", "--out")
  assert writable_dir(tmp_path / "new" / "deep").is_dir() and os.listdir(tmp_path / "new" / "deep") == []   # the probe is gone


def test_checking_an_output_file_leaves_no_folder_behind(tmp_path):
  """A run whose --json is checked, then refused for another reason, must not leave new empty folders."""
  writable_file(tmp_path / "new" / "deep" / "x.json", "--json")
  assert not (tmp_path / "new").exists()
  save_json({"a": 1}, tmp_path / "new" / "deep" / "x.json")                  # the write itself creates them
  assert (tmp_path / "new" / "deep" / "x.json").is_file()


def test_full_disk_is_refused_before_work(tmp_path, monkeypatch):
  import shutil
  monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 4096))
  with pytest.raises(UserError, match="disk is full"): writable_file(tmp_path / "x.json", "--json")


def test_parser_checks_json_and_save_when_parsing(capsys):
  p = project_parser("demo", "doc")
  with pytest.raises(SystemExit) as e: p.parse_args(["--json", "/proc/x.json"])
  assert e.value.code == 2 and "--json /proc/x.json cannot be written" in capsys.readouterr().err


def test_empty_output_paths_are_refused(capsys):
  for flag in ("--json", "--out", "--save"):
    with pytest.raises(SystemExit) as e: project_parser("demo", "doc").parse_args([flag, ""])
    assert e.value.code == 2 and f"{flag} needs a path" in capsys.readouterr().err


def test_write_failing_midway_keeps_the_old_file_and_names_the_errno(tmp_path, monkeypatch):
  dest = tmp_path / "summary.json"
  save_json({"run": 1}, dest)
  def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "replace", full)
  with pytest.raises(UserError, match=r"cannot write .*summary.json: No space left on device \(errno 28\)"): save_json({"run": 2}, dest)
  assert dest.read_text().strip().startswith('{\n  "run": 1') and os.listdir(tmp_path) == ["summary.json"]


def test_atomic_write_gives_the_umask_mode(tmp_path):
  old = os.umask(0o022)
  try:
    with atomic_write(tmp_path / "a.txt") as f: f.write("x")
    assert (os.stat(tmp_path / "a.txt").st_mode & 0o777) == 0o644
    os.chmod(tmp_path / "a.txt", 0o640)                           # a rewrite keeps the file's own mode
    with atomic_write(tmp_path / "a.txt") as f: f.write("y")
    assert (os.stat(tmp_path / "a.txt").st_mode & 0o777) == 0o640
  finally: os.umask(old)


def test_sigterm_mid_write_leaves_no_temporary(tmp_path):
  code = ("import sys, time, common\nfrom common.files import atomic_write\n"
          "def body():\n  with atomic_write(sys.argv[1]) as f:\n    f.write('half'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
          "sys.exit(common.run_main(body, open_device=False))\n")
  proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out.txt")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "writing"
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=30)
  assert proc.returncode == 143 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
  assert os.listdir(tmp_path) == []


# ---- number flags and presets -----------------------------------------------------------------

@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_float_flags_refuse_nan_and_inf(text):
  import argparse
  for parse in (finite_float, positive_float, float_range(0, 1)):
    with pytest.raises(argparse.ArgumentTypeError): parse(text)


def test_quick_changes_defaults_only():
  p = ArgumentParser()
  p.add_argument("--quick", action="store_true")
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--hop", type=int, default=80)
  p.preset("quick", steps=20, hop=160)
  a = p.parse_args(["--quick", "--hop", "40"])
  assert (a.steps, a.hop, a.given) == (20, 40, {"quick", "hop"})
  assert p.parse_args([]).steps == 800 and p.parse_args(["--steps", "5", "--quick"]).steps == 5


# ---- run_main: device, memory -----------------------------------------------------------------

def test_out_of_memory_is_one_line(capsys):
  def enomem(): raise OSError(errno.ENOMEM, "Cannot allocate memory: mmap of 4294967296 bytes")
  assert run_main(enomem, open_device=False) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "out of memory" in err and "4294967296 bytes" in err
  def memerr(): raise MemoryError("cannot allocate 8.0 GB on NV")
  assert run_main(memerr, open_device=False) == 2 and "8.0 GB" in capsys.readouterr().err


MAIN_WITH_FLAGS = ("import sys, common\n"
                   "def main():\n"
                   "  p = common.project_parser('demo', None, save_help=None)\n"
                   "  p.add_argument('--steps', type=common.cli.positive_int, default=3)\n"
                   "  p.parse_args()\n"
                   "  print('worked')\n"
                   "sys.exit(common.run_main(main))\n")


def test_missing_device_is_one_line_before_the_work():
  from conftest import run_py
  r = run_py("-c", MAIN_WITH_FLAGS, env={"DEV": "CUDA"})
  assert_one_line_error(r, "cannot open device CUDA")
  assert "worked" not in r.stdout


def test_a_script_that_parses_before_run_main_still_opens_its_device_first():
  from conftest import run_py
  assert_one_line_error(run_py("-m", "common.device", env={"DEV": "CUDA"}), "cannot open device CUDA")


def test_help_and_a_refused_flag_open_no_device():
  # the device opens once the flags parse: --help and a bad flag answer at once, even where DEV names a missing device
  from conftest import run_py
  r = run_py("-c", MAIN_WITH_FLAGS, "--help", env={"DEV": "CUDA"})
  assert r.returncode == 0 and "--steps" in r.stdout and "cannot open device" not in r.stderr, r.stderr
  assert_one_line_error(run_py("-c", MAIN_WITH_FLAGS, "--steps", "0", env={"DEV": "CUDA"}), "--steps", "must be > 0")


def test_an_nv_device_tinygrad_cannot_drive_names_the_way_out(monkeypatch):
  # on an H200, tinygrad 0.14's NV raises a bare StopIteration: the line says what to do instead of just that
  import common.device as cd
  class NoGPU:
    DEFAULT = "NV"
    def __getitem__(self, name): raise StopIteration
  monkeypatch.setattr("tinygrad.Device", NoGPU())          # open_device imports Device when called
  with pytest.raises(UserError) as e: cd.open_device()
  assert "StopIteration" in str(e.value) and "DEV=CUDA" in str(e.value) and "backend.selftest" in str(e.value)
  assert "\n" not in str(e.value)


# ---- images -----------------------------------------------------------------------------------

def test_decompression_bomb_is_one_line_naming_the_size(tmp_path):
  png_claiming(tmp_path / "bomb.png", 60000, 60000)
  with pytest.raises(UserError, match="60000x60000"): read_image(tmp_path / "bomb.png")


def test_16_bit_and_float_images_scale_by_their_real_range(tmp_path):
  from PIL import Image
  ramp = np.linspace(0, 65535, 32 * 16).reshape(16, 32).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / "d16.png")
  g = read_image(tmp_path / "d16.png", 1)
  np.testing.assert_allclose(g, ramp / 65535, atol=1e-6)              # not clipped to white at 255
  assert read_image(tmp_path / "d16.png", 3).shape == (16, 32, 3)
  np.testing.assert_array_equal(read_image(tmp_path / "d16.png", 1, raw=True), ramp.astype(np.float32))
  Image.fromarray(np.full((4, 4), 0.25, np.float32), mode="F").save(tmp_path / "f.tif")
  np.testing.assert_allclose(read_image(tmp_path / "f.tif", 1), 0.25)
  Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
  assert read_image(tmp_path / "la.png", 1).tolist() == [[1, 1], [1, 1]]


# ---- audio ------------------------------------------------------------------------------------

def test_audio_reader_warns_on_absurd_amplitude_and_refuses_nan(tmp_path, capsys):
  import soundfile as sf
  sf.write(tmp_path / "loud.wav", (np.sin(np.arange(800) / 5) * 300).astype(np.float32), 8000, subtype="FLOAT")
  x, sr = read_audio(tmp_path / "loud.wav")
  assert sr == 8000 and abs(np.abs(x).max() - 300) < 1 and "above full scale" in capsys.readouterr().err
  bad = np.zeros(100, np.float32)
  bad[5] = np.nan
  sf.write(tmp_path / "nan.wav", bad, 8000, subtype="FLOAT")
  with pytest.raises(UserError, match="NaN"): read_audio(tmp_path / "nan.wav")
  (tmp_path / "x.wav").write_bytes(b"RIFF0000WAVEjunk")
  with pytest.raises(UserError, match="cannot be read"): read_audio(tmp_path / "x.wav")


# ---- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_names_its_writer_and_refuses_others(tmp_path):
  from tinygrad import Tensor
  p = save_checkpoint({"w": Tensor.ones(2, 2)}, tmp_path / "m.safetensors", {"width": 8}, script="audio-ml/audio_classify.py", model="cnn")
  _, meta = load_checkpoint(p, script="audio-ml/audio_classify.py", model="cnn", required_meta=("width",))
  assert meta["width"] == 8
  with pytest.raises(UserError, match="written by audio-ml/audio_classify.py, not generative"):
    load_checkpoint(p, script="generative/generative_models.py")
  with pytest.raises(UserError, match="holds model 'cnn', expected 'ddpm'"): load_checkpoint(p, model="ddpm")
  with pytest.raises(UserError, match="metadata lacks 'sample_rate'"): load_checkpoint(p, required_meta=("sample_rate",))
  with pytest.raises(UserError, match=r"'w' has shape \(2, 2\), expected \(3, 2\)"): load_checkpoint(p, expected={"w": (3, 2)})


# ---- shared folder loaders --------------------------------------------------------------------

def test_scan_labelled_and_stratified_holdout(tmp_path):
  from PIL import Image
  for label, n in (("cat", 5), ("dog", 3)):
    (tmp_path / label).mkdir()
    for i in range(n): Image.new("L", (2, 2)).save(tmp_path / label / f"{i}.png")
  files, labels = scan_labelled(tmp_path, IMAGE_SUFFIXES)
  assert len(files) == 8 and labels.count("cat") == 5 and labels.count("dog") == 3
  test = holdout_split(np.array(labels), len(files), 0.2, np.random.default_rng(0))
  assert test[np.array(labels) == "cat"].sum() == 1 and test[np.array(labels) == "dog"].sum() == 1
  with pytest.raises(UserError, match="only one item"): holdout_split(np.array(["a", "b", "b"]), 3, 0.2, np.random.default_rng(0))
  with pytest.raises(UserError, match="no files of type"): scan_labelled(tmp_path / "cat" / "..", frozenset({".wav"}))


def test_idx_folder_with_only_the_t10k_pair_is_one_line(tmp_path):
  def idx(path, arr):
    path.write_bytes(bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes())
  idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)))
  idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(4))
  with pytest.raises(UserError, match="no train-images"): load_idx_pairs(tmp_path)
  (train, _), test = load_idx_pairs(tmp_path / "t10k-images-idx3-ubyte"), None
  assert train[0].shape == (4, 28, 28) and train[1].tolist() == [0, 1, 2, 3] and test is None
