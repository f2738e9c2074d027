"""Atomic output, checkpoints, images, the CLI's one-line errors, and the plots."""
import os
import numpy as np
import pytest
import common  # noqa: F401
from common.cli import UserError, run_main, check, project_parser, int_list
from common.files import atomic_write, save_json, save_checkpoint, load_checkpoint, check_state_matches, read_image, save_image
from conftest import run_py


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
  p = tmp_path / "result.txt"
  p.write_text("old")
  with pytest.raises(RuntimeError):
    with atomic_write(p) as f:
      f.write("half of the new")
      raise RuntimeError("crash midway")
  assert p.read_text() == "old"
  assert os.listdir(tmp_path) == ["result.txt"]        # no temporary left behind


def test_save_json_replaces_nan_and_numpy(tmp_path):
  import json
  p = save_json({"a": np.float32(1.5), "b": float("nan"), "c": [np.int64(3)]}, tmp_path / "s.json")
  assert json.loads(p.read_text()) == {"a": 1.5, "b": None, "c": [3]}


def test_checkpoint_roundtrip_and_metadata(tmp_path):
  from tinygrad import Tensor, dtypes
  w = Tensor.randn(3, 4).realize()
  p = save_checkpoint({"w": w, "h": Tensor([1, 2], dtype=dtypes.half)}, tmp_path / "m.safetensors", {"labels": ["a", "b"], "note": "x"})
  t, meta = load_checkpoint(p)
  np.testing.assert_array_equal(t["w"].numpy(), w.numpy())
  assert t["h"].dtype == dtypes.half and meta == {"labels": ["a", "b"], "note": "x"}
  # the writer is ours (no tinygrad safe_save): int8 and int32 survive too, and the data starts 8-byte aligned
  q = save_checkpoint({"q": Tensor([[-128, 5], [127, 0]], dtype=dtypes.int8), "i": Tensor([7, -9], dtype=dtypes.int32),
                       "n": Tensor(3, dtype=dtypes.int32)}, tmp_path / "q.safetensors")          # n: a 0-d tensor (BatchNorm's counter)
  t, _ = load_checkpoint(q)
  assert t["q"].dtype == dtypes.int8 and t["q"].tolist() == [[-128, 5], [127, 0]] and t["i"].tolist() == [7, -9]
  assert t["n"].shape == () and t["n"].item() == 3
  assert int.from_bytes(q.read_bytes()[:8], "little") % 8 == 0


def test_checkpoint_errors_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="no such file"): load_checkpoint(tmp_path / "absent.safetensors")
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
  with pytest.raises(UserError, match="not a readable safetensors.*past the end"): load_checkpoint(bad)
  from tinygrad import Tensor
  good = save_checkpoint({"w": Tensor.ones(64, 64)}, tmp_path / "good.safetensors")
  truncated = tmp_path / "cut.safetensors"
  truncated.write_bytes(good.read_bytes()[:-100])
  with pytest.raises(UserError, match="outside the file"): load_checkpoint(truncated)


def test_check_state_matches_names_first_mismatch():
  def E(*s): return np.zeros(s)
  with pytest.raises(UserError, match="missing key 'b'"): check_state_matches({"a": E(1), "b": E(2)}, {"a": E(1)}, "ckpt")
  with pytest.raises(UserError, match=r"'a' has shape \(2,\), expected \(1,\)"): check_state_matches({"a": E(1)}, {"a": E(2)}, "ckpt")
  with pytest.raises(UserError, match="unexpected key 'z'"): check_state_matches({"a": E(1)}, {"a": E(1), "z": E(1)}, "ckpt")
  check_state_matches({"a": (2, 3)}, {"a": E(2, 3)}, "ckpt")                  # shapes may be given as tuples
  with pytest.raises(UserError, match=r"expected \(3, 2\)"): check_state_matches({"a": (3, 2)}, {"a": E(2, 3)}, "ckpt")


def test_images_any_mode(tmp_path):
  from PIL import Image
  rgba = Image.new("RGBA", (5, 3), (255, 0, 0, 0))         # fully transparent: composited on white
  rgba.save(tmp_path / "a.png")
  assert read_image(tmp_path / "a.png").shape == (3, 5, 3) and read_image(tmp_path / "a.png")[0, 0].tolist() == [1, 1, 1]
  Image.new("L", (4, 6), 51).save(tmp_path / "g.png")
  assert read_image(tmp_path / "g.png").shape == (6, 4, 3)
  np.testing.assert_allclose(read_image(tmp_path / "g.png", 1), 0.2, atol=1e-6)
  Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
  assert read_image(tmp_path / "c.jpg").min() > 0.95                          # CMYK with no ink is white
  pal = Image.new("P", (2, 2), 1)
  pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
  pal.save(tmp_path / "p.png")
  assert read_image(tmp_path / "p.png")[0, 0].tolist() == [1, 0, 0]
  (tmp_path / "t.png").write_text("not an image")
  with pytest.raises(UserError, match="cannot be read as an image"): read_image(tmp_path / "t.png")
  with pytest.raises(UserError, match="no such file"): read_image(tmp_path / "absent.png")
  save_image(np.full((2, 2, 3), 0.5), tmp_path / "o.png")
  np.testing.assert_allclose(read_image(tmp_path / "o.png")[0, 0], 128 / 255, rtol=1e-6)


def test_run_main_maps_errors(capsys):
  def bad(): raise UserError("image x.png: no such file")
  assert run_main(bad) == 2 and capsys.readouterr().err == "error: image x.png: no such file\n"
  assert run_main(lambda: None) == 0 and run_main(lambda: 1) == 1


def test_check_prints_pass_fail(capsys):
  assert check("accuracy", 0.99, 0.98) and "PASS: accuracy = 0.99" in capsys.readouterr().out
  assert not check("mse", 0.02, 0.01, higher_is_better=False) and "FAIL: mse = 0.02 (target <= 0.01)" in capsys.readouterr().out


def test_argparse_errors_are_one_line():
  r = run_py("tests/fixtures/tiny_bench.py", "--seed", "abc")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--seed" in r.stderr, r.stderr


def test_int_list():
  import argparse
  assert int_list("64,128") == [64, 128]
  with pytest.raises(argparse.ArgumentTypeError): int_list("64,-1")


def test_project_parser_defaults():
  a = project_parser("demo", "doc").parse_args([])
  assert (a.bench, a.json, a.out, a.seed, a.quick, a.save, a.load) == (False, None, os.path.join("out", "demo"), 0, False, None, None)


def test_plots_write_png(tmp_path):
  from common.plots import plot_curves, plot_confusion, image_grid, moving_average
  p = plot_curves(tmp_path / "c.png", {"loss": [3, 2, 1.5, 1]}, smooth=2, logy=True, hlines={"target": 1.2})
  assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert plot_confusion(tmp_path / "m.png", np.eye(3) * 5, ["a", "b", "c"]).stat().st_size > 1000
  assert image_grid(np.zeros((5, 4, 4)), nrow=3, pad=1).shape == (2 * 5 + 1, 3 * 5 + 1)
  np.testing.assert_allclose(moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
