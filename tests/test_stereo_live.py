"""stereo/ live pipeline (issue 22): timestamp pairing, the moving synthetic scene's ground truth, rectification
against OpenCV's remap, the obstacle grid and heading filter, the live loop on the simulated source (its own
success check, clean stop on SIGINT), --live --bench JSON, and missing cameras as one line. CPU, no camera."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "stereo"))
os.environ.setdefault("DEV", "CPU")

import common  # noqa: E402,F401  (before tinygrad)
from tinygrad import Tensor  # noqa: E402
import capture_stereo as cs  # noqa: E402
import depth_map as dm  # noqa: E402
import live  # noqa: E402
import scene as sc  # noqa: E402
import stereo_files as sf  # noqa: E402
from conftest import bad_input, run_py  # noqa: E402

SCRIPT, CAPTURE = "stereo/depth_map.py", "stereo/capture_stereo.py"
CPU = {"DEV": "CPU"}


# ---- pairing by timestamp ------------------------------------------------------------------------------------

def stream(pairer, lefts, rights):
  """Push both streams in arrival order (as the camera threads would), then flush."""
  events = sorted([(t, "left", i) for i, t in enumerate(lefts)] + [(t, "right", i) for i, t in enumerate(rights)])
  out = []
  for t, side, i in events: out += pairer.push(side, cs.Frame(t, np.full((1, 1), i, np.uint8)))
  return out + pairer.flush()


def test_pairing_by_nearest_timestamp_with_skew_and_dropped_frames():
  rng = np.random.default_rng(0)
  lefts = np.arange(40) / 30.0
  rights = list(lefts + rng.uniform(-0.004, 0.004, 40))
  rights[7] += 0.015                     # a right frame 15 ms late: beyond the 10 ms limit, both frames dropped
  for k in (20, 12, 3): del rights[k]    # the right camera dropped three frames
  p = cs.Pairer(0.010)
  pairs = stream(p, list(lefts), rights)
  assert len(pairs) == 36 and p.dropped == {"left": 4, "right": 1}
  assert all(abs(q.skew_ms) <= 10.0 for q in pairs) and np.allclose(p.skews_ms, [q.skew_ms for q in pairs])
  for q in pairs:                        # each pair is the nearest-in-time right frame of its left frame
    assert abs(q.t_right - q.t_left) == min(abs(np.array(rights) - q.t_left))
  assert [int(q.left[0, 0]) for q in pairs] == sorted(set(range(40)) - {3, 7, 12, 20})
  assert p.stats()["skew_ms_max"] <= 10.0
  # one stream running 2x faster: every other frame has no partner and is dropped, pairs stay nearest
  p2 = cs.Pairer(0.010)
  fast = list(np.arange(80) / 60.0 + 0.001)
  pairs2 = stream(p2, list(lefts), fast)
  assert len(pairs2) == 40 and p2.dropped["right"] == 40 and all(abs(q.skew_ms - 1.0) < 1e-6 for q in pairs2)


def test_capture_thread_drops_stale_pairs_for_a_slow_consumer_and_stops():
  class Endless:
    pairer, what = cs.Pairer(0.01), "test"
    def pairs(self):
      k = 0
      while True:
        yield cs.StereoPair(k, np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), k, k)
        k += 1
    def close(self): pass
  cap = cs.CaptureThread(Endless(), None, lossless=False)
  first = cap.get()
  time.sleep(0.3)
  newer = cap.get()
  cap.close()
  assert newer.index > first.index + 1 and cap.stale > 0           # the consumer got a recent pair, not a backlog
  lossless = cs.CaptureThread(Endless(), 5, lossless=True)
  got = [p.index for p in iter(lossless.get, None)]
  lossless.close()
  assert got == [0, 1, 2, 3, 4] and lossless.stale == 0


# ---- the simulated source ------------------------------------------------------------------------------------

def test_moving_scene_disparity_is_f_b_over_z_and_views_agree():
  w, h, D, f, B = 160, 120, 32, 0.708 * 160, 0.06
  m = sc.MovingScene(w, h, D, f, B, seed=3)
  for k in (0, 17):
    left, right, gt, occluded = m.frame(k, noise=0.0)
    assert left.dtype == np.uint8 and gt.max() <= D - 2 and gt.min() == pytest.approx(f * B / m.wall_m)
    hits = 0
    for x0, x1, y0, y1, z, _ in sorted(m.boxes(k), key=lambda b: b[4]):     # nearest first: its centre shows the box
      cx, cy = m.cx + f * (x0 + x1) / 2 / z, m.cy + f * (y0 + y1) / 2 / z
      if 0 <= cx < w and 0 <= cy < h and hits == 0:
        assert gt[int(cy), int(cx)] == pytest.approx(f * B / z, rel=1e-6)
        hits += 1
    assert hits == 1
    # the right view at x − d(x) shows the same surface point as the left view at x (visible pixels)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    _, left_f = sc.visible(m.planes(k), x, y, right_view=False)
    _, seen = sc.visible(m.planes(k), x - gt, y, right_view=True)
    np.testing.assert_allclose(seen[~occluded], left_f[~occluded], atol=1e-3)   # gt is float32
  assert m.boxes(0)[0][4] > m.boxes(5)[0][4]                        # the rig drives towards the boxes


def test_sim_source_pairs_carry_truth_and_folder_replays_saved_pairs(tmp_path):
  assert cs.main(["--quick", "--out", str(tmp_path), "--sim-drop", "0.2"]) == 0
  summary = json.loads((tmp_path / "capture_summary.json").read_text())
  assert summary["pairs"] == 4 and summary["skew_ms_max"] <= 10.0
  src = cs.open_source(f"folder:{tmp_path}", 128, 96)
  saved = list(src.pairs())
  stamps = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
  assert [p.index for p in saved] == [0, 1, 2, 3] and [p.t_left for p in saved] == [s["t_left"] for s in stamps]
  sim = cs.SimSource(128, 96, 16, 0.708 * 128, 0.06, drop=0.2)
  for got, want in zip(saved, sim.pairs()):
    np.testing.assert_array_equal(got.left, want.left)
    assert want.truth["gt"].shape == (96, 128) and got.skew_ms == pytest.approx(want.skew_ms)


# ---- rectification, obstacle grid, heading ----------------------------------------------------------------------

def test_rectifier_matches_opencv_remap_and_numpy():
  cv2 = pytest.importorskip("cv2")
  h, w = 96, 128
  K = np.array([[110.0, 0, 63.0], [0, 112.0, 48.5], [0, 0, 1]])
  dist = np.array([-0.12, 0.03, 0.001, -0.0005, 0.0])
  R, _ = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))
  P = np.array([[100.0, 0, 64.0, 0], [0, 100.0, 48.0, 0], [0, 0, 1, 0]])
  mx, my = cv2.initUndistortRectifyMap(K, dist, R, P, (w, h), cv2.CV_32FC1)
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  img = sc.texture(x, y, 5).astype(np.float32)
  ours = live.Rectifier(mx, my)(Tensor(img)).numpy()
  ref = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
  assert inside.mean() > 0.8
  err = np.abs(ours - ref)[inside]
  assert err.max() < 1.5 and err.mean() < 0.2        # OpenCV interpolates with 5-bit fixed-point weights
  np.testing.assert_allclose(ours, sf.remap_bilinear(img, mx, my), atol=2e-3)


def test_obstacle_cells_match_numpy_and_ignore_a_lone_outlier():
  rng = np.random.default_rng(1)
  depth = rng.uniform(1, 5, (10, 13)).astype(np.float32)
  ok = rng.uniform(size=depth.shape) > 0.3
  near, share = (t.numpy() for t in live.obstacle_cells(Tensor(depth), Tensor(ok), 2, 3, dilate=1))
  for r in range(2):
    for c in range(3):
      cell = (slice(5 * r, 5 * r + 5), slice(5 * c, 5 * c + 5))
      assert near[r, c] == pytest.approx(depth[cell][ok[cell]].min()) and share[r, c] == pytest.approx(ok[cell].sum() / 25)
  depth = np.full((12, 12), 4.0, np.float32)
  depth[3, 3] = 0.2                                    # one wrong near pixel
  depth[6:12, 6:12] = 1.0                              # a real obstacle
  near, _ = (t.numpy() for t in live.obstacle_cells(Tensor(depth), Tensor(np.ones((12, 12), bool)), 2, 2, dilate=5))
  assert near[0, 0] == 4.0 and near[1, 1] == 1.0


def test_heading_filter_smooths_holds_with_hysteresis_and_says_unknown():
  cfg = live.AvoidConfig(rows=1, cols=4, smoothing=0.5, hysteresis=0.2, range_m=3.0, min_valid=0.1)
  f = live.HeadingFilter(cfg, width=40, focal_px=20.0, cx=19.5)
  full = np.ones((1, 4))
  r = f.update(np.array([[1.0, 3.0, 1.0, 1.0]]), full)
  assert r["band"] == 1 and r["heading"] == "ok" and r["heading_deg"] == pytest.approx(np.degrees(np.arctan2(15 - 19.5, 20)))
  r = f.update(np.array([[1.0, 2.0, 1.0, 2.2]]), full)          # band 3 becomes a bit clearer than band 1: no switch
  assert r["clearance_m"] == [1.0, 2.5, 1.0, 1.6] and r["band"] == 1
  for _ in range(3): r = f.update(np.array([[1.0, 0.5, 1.0, 3.0]]), full)   # band 1 blocked: the heading moves
  assert r["band"] == 3 and r["nearest_m"] == 0.5 and r["nearest_deg"] == pytest.approx(f.angles[1])
  sparse = np.array([[1.0, 0.0, 0.0, 0.0]])
  for _ in range(cfg.max_age + 1): r = f.update(np.array([[1.0, np.inf, np.inf, np.inf]]), sparse)
  assert r["heading"] == "unknown" and r["band"] is None and r["heading_deg"] is None


def test_success_check_fails_a_fixed_heading():
  """The scene's free direction moves: no fixed band would reach the 90 % target of the check."""
  w, h, D = 128, 96, 16
  m = sc.MovingScene(w, h, D, 0.708 * w, 0.06)
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  clear = []
  for k in range(0, 120, 2):
    gt, _ = sc.visible(m.planes(k), x, y, right_view=False, shade=False)
    clear.append(np.minimum(live.true_cells(gt.astype(np.float32), 0.708 * w, 0.06, 3, 8).min(axis=0), m.free_m))
  clear = np.array(clear)
  safe_pct = 100 * (clear >= 0.8 * clear.max(axis=1, keepdims=True)).mean(axis=0)
  assert safe_pct.max() < live.LIVE_TARGET_SAFE, safe_pct


# ---- the live loop end to end -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_live_loop_on_sim_passes_its_checks_and_writes_complete_files(tmp_path):
  from common.bench import validate
  r = run_py(SCRIPT, "--live", "--quick", "--frames", "12", "--snapshot-every", "5", "--out", tmp_path, "--json", tmp_path / "t.json", env=CPU)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert "PASS: frames whose heading is truly free" in r.stdout and "PASS: disparity bad-1.0" in r.stdout
  recs = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
  assert [x["frame"] for x in recs] == list(range(12))
  assert all(set(x["ms"]) == set(live.STAGES) and "heading" in x and "nearest_m" in x for x in recs)
  scored = [x["bad1_visible_pct"] for x in recs if "bad1_visible_pct" in x]
  assert len(scored) >= 2 and max(scored) <= 3.0                # depth_map.py's own bar on every scored frame
  summary = json.loads((tmp_path / "live_summary.json").read_text())
  assert summary["frames"] == 12 and summary["safe_pct"] >= 90 and not summary["interrupted"]
  assert sorted(p.name for p in tmp_path.glob("snapshot_*.png")) == ["snapshot_000000.png", "snapshot_000005.png", "snapshot_000010.png"]
  (rec,) = validate(json.loads((tmp_path / "t.json").read_text()))
  assert rec["unit"] == "frames/s" and set(rec["stage_ms_median"]) == set(live.STAGES)


@pytest.mark.slow
def test_live_loop_stops_cleanly_on_sigint(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("DEV", "JITBEAM", "BEAM")} | CPU
  proc = subprocess.Popen([sys.executable, SCRIPT, "--live", "--quick", "--frames", "100000", "--aggregation", "box", "--out", str(tmp_path),
                           "--video", str(tmp_path / "live.avi")],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  log, deadline = tmp_path / "live.jsonl", time.time() + 120
  while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 4): time.sleep(0.2)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, out[-1000:] + err[-2000:]
  assert "Traceback" not in err and "interrupted after" in err
  lines = log.read_text().splitlines()
  recs = [json.loads(line) for line in lines]                    # every line complete
  summary = json.loads((tmp_path / "live_summary.json").read_text())
  assert summary["interrupted"] and summary["frames"] == len(recs) >= 4
  cv2 = pytest.importorskip("cv2")
  video, frames = cv2.VideoCapture(str(tmp_path / "live.avi")), 0
  while video.read()[0]: frames += 1
  assert frames == len(recs)                                     # the video was closed properly and renamed into place


@pytest.mark.noopt
@pytest.mark.slow
def test_live_bench_quick_json(tmp_path):
  from common.bench import validate
  r = run_py(SCRIPT, "--live", "--bench", "--quick", "--json", tmp_path / "b.json", env=CPU)
  assert r.returncode == 0, r.stderr[-2000:]
  recs = validate(json.loads((tmp_path / "b.json").read_text()))
  assert [x["case"] for x in recs] == ["live box 64x48 D16", "live SGM 64x48 D16"]
  assert all(set(x["split_ms"]) == {"rectify", "match", "post"} and x["value"] > 0 for x in recs)
  assert "| live box 64x48 D16 |" in r.stdout


# ---- missing cameras, bad flags ---------------------------------------------------------------------------------

def test_missing_cameras_are_one_line_exit_2(tmp_path, capsys):
  pytest.importorskip("cv2")
  bad_input(SCRIPT, "--live", "--source", "argus", "--frames", "1", "--out", tmp_path,
            fragments=("no stereo camera: tried", "nvarguscamerasrc sensor-id=0 and 1"), env=CPU)
  with pytest.raises(common.UserError, match="no stereo camera: tried /dev/video0 and /dev/video1"):
    cs.main(["--source", "v4l2", "--out", str(tmp_path)])
  with pytest.raises(common.UserError, match="no stereo camera: tried /dev/video4 and /dev/video5"): cs.open_source("v4l2", 64, 48, devices=(4, 5))


def test_camera_source_without_opencv_is_one_line(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "cv2", None)
  with pytest.raises(common.UserError, match="needs OpenCV .* --source sim and folder:PATH work without it") as e:
    dm.main(["--live", "--source", "argus", "--out", str(tmp_path)])
  assert "\n" not in str(e.value)
  assert cs.open_source("sim", 64, 48, max_disp=16).what.startswith("simulated rig")     # the simulated source needs no OpenCV


@pytest.mark.parametrize("args,needle", [
  (["--live", "--source", "sim", "--calib", "x.npz"], "renders rectified pairs"),
  (["--frames", "3"], "go with --live"),
  (["--live", "--left", "a.png", "--right", "b.png"], "--live reads its frames from --source"),
  (["--live", "--source", "nowhere"], "choose sim, argus, v4l2 or folder:PATH"),
  (["--live", "--bench", "--source", "v4l2"], "simulated source"),
  (["--live", "--bench", "--frames", "5"], "belong to the live run"),
  (["--live", "--source", "argus", "--sim-drop", "0.1"], "go with --source sim"),
  (["--live", "--window"], "no display here"),
  (["--live", "--smoothing", "0"], "between"),
])
def test_live_flag_rules_are_one_line(args, needle, capsys, monkeypatch):
  monkeypatch.delenv("DISPLAY", raising=False)
  monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
  with pytest.raises(SystemExit) as e: dm.parse_args(args, dm.__doc__, dm.MatchConfig())
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_folder_source_bad_input_is_one_line(tmp_path, capsys):
  with pytest.raises(common.UserError, match="no such folder"):
    dm.main(["--live", "--source", f"folder:{tmp_path}/none", "--out", str(tmp_path / "o")])
  (tmp_path / "left_000000.png").write_bytes(b"")
  with pytest.raises(common.UserError, match="1 left images but 0 right"): cs.open_source(f"folder:{tmp_path}", 64, 48)
  with pytest.raises(SystemExit): dm.parse_args(["--help"], dm.__doc__, dm.MatchConfig())
  assert "--live" in capsys.readouterr().out
