"""common.beam on the CPU: a budgeted search stops in time and changes no number, the cache survives
an export -> wipe -> import round trip, foreign files are refused, and TF32 choices never reach fp32 runs."""
import json
import pytest
from conftest import run_py, assert_one_line_error

JOB = "tests/fixtures/beam_job.py"


def job(tmp_path, *args, db="cache.db", **env):
  r = run_py(JOB, *args, env={"CACHEDB": str(tmp_path / db), "PARALLEL": "0", **env}, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  result = next(ln for ln in r.stdout.splitlines() if ln.startswith("result"))
  searched, cached, heuristic, spent = next(ln for ln in r.stdout.splitlines() if ln.startswith("state")).split()[1:]
  return result, (int(searched), int(cached), int(heuristic), float(spent)), r.stdout + r.stderr


def beam(tmp_path, *args, db="cache.db"):
  return run_py("-m", "common.beam", *args, env={"CACHEDB": str(tmp_path / db)}, timeout=120)


@pytest.mark.slow
def test_budget_stops_the_search_and_changes_no_number(tmp_path):
  plain, _, _ = job(tmp_path, db="none.db")
  budget_s = 2.0
  result, (searched, cached, heuristic, spent), err = job(tmp_path, "--beam-minutes", str(budget_s / 60), JITBEAM="2")
  assert result == plain                                   # BEAM changes how kernels run, never what they compute
  assert heuristic >= 1 and cached == 0                    # the budget ran out: the rest kept the heuristic's choice
  assert spent < budget_s + 10, spent                      # the margin: one candidate's timing after the deadline
  assert "BEAM 1/2 kernels" in err and "BEAM 2/2 kernels" in err and "left to the heuristic" in err   # progress, then the summary


def floor_counts(out: str) -> tuple[int, int]:
  small, timed = next(ln for ln in out.splitlines() if ln.startswith("floor")).split()[1:]
  return int(small), int(timed)


@pytest.mark.slow
def test_a_floor_leaves_fast_kernels_unsearched_and_remembers_their_times(tmp_path):
  plain, _, _ = job(tmp_path, db="none.db")
  result, (searched, cached, heuristic, _), out = job(tmp_path, JITBEAM="2", BEAM_MIN_US="1e9")   # every kernel is "fast"
  assert result == plain and (searched, cached, heuristic) == (0, 0, 0) and floor_counts(out) == (2, 2), out[-2000:]
  assert "BEAM searched no kernel: 2 run under 1e+09 µs and keep the heuristic's choice" in out
  again, (searched, _, _, _), out = job(tmp_path, JITBEAM="2", BEAM_MIN_US="1e9")
  assert again == plain and searched == 0 and floor_counts(out) == (2, 0)   # the second run read both times from the cache
  r = run_py(JOB, env={"JITBEAM": "2", "BEAM_MIN_US": "fast", "CACHEDB": str(tmp_path / "x.db")})
  assert_one_line_error(r, "BEAM_MIN_US='fast'", "microseconds")


@pytest.mark.slow
def test_export_wipe_import_finds_every_kernel_in_the_cache(tmp_path):
  fast = {"JITBEAM": "1", "BEAM_MIN_PROGRESS": "1e9"}     # one round of candidates per kernel: a full search, kept short
  result, (searched, cached, _, _), out = job(tmp_path, BEAM_REPORT="1", **fast)
  assert searched >= 1 and cached == 0
  # BEAM_REPORT: a line per kernel as it is searched (a run cut off keeps them), then the table at exit
  assert out.count("BEAM kernel | ") == searched and out.count("| heuristic opts |") == 1, out[-2000:]
  r = beam(tmp_path, "export", str(tmp_path / "beam.json"))
  assert r.returncode == 0 and f"exported {searched} kernels" in r.stdout, r.stderr
  doc = json.loads((tmp_path / "beam.json").read_text())
  assert doc["device"] == "CPU" and all(e["projects"] == ["beamjob"] for e in doc["entries"])
  r = beam(tmp_path, "import", str(tmp_path / "beam.json"), db="fresh.db")            # a wiped cache
  assert r.returncode == 0, r.stderr
  again, (searched2, cached2, _, _), err = job(tmp_path, db="fresh.db", **fast)
  assert (searched2, cached2, again) == (0, searched, result) and f"BEAM from cache ({searched} kernels)" in err
  listing = beam(tmp_path, "list", db="fresh.db").stdout
  assert f"| CPU | beam_search | beamjob | {searched} |" in listing
  for field, value in (("device", "NV"), ("tinygrad", "0.13.0"), ("arch", "sm_87")):
    (tmp_path / "other.json").write_text(json.dumps({**doc, field: value}))
    assert_one_line_error(beam(tmp_path, "import", str(tmp_path / "other.json"), db="fresh.db"), "refused", field)
  (tmp_path / "junk.json").write_text("{}")
  assert_one_line_error(beam(tmp_path, "import", str(tmp_path / "junk.json")), "not a BEAM cache file")


@pytest.mark.slow
def test_a_bench_table_and_the_exit_give_the_search_line_once(tmp_path):
  _, (searched, _, _, _), out = job(tmp_path, JITBEAM="1", BEAM_MIN_PROGRESS="1e9", BEAMJOB_TABLE="1")
  assert searched >= 1 and out.count(f"BEAM searched {searched} kernels") == 1, out[-2000:]


@pytest.mark.slow
def test_tf32_search_is_kept_apart_from_fp32_runs(tmp_path):
  fast = {"JITBEAM": "1", "BEAM_MIN_PROGRESS": "1e9"}
  tf32_result, (searched, _, _, _), _ = job(tmp_path, ALLOW_TF32="1", **fast)
  fp32_result, (searched_fp32, cached_fp32, _, _), _ = job(tmp_path, **fast)
  assert searched >= 1 and cached_fp32 == 0 and searched_fp32 == searched      # the fp32 run did not reuse the TF32 choices
  assert fp32_result == tf32_result                                           # (the CPU has no TF32: same numbers)
  listing = beam(tmp_path, "list").stdout
  assert "beam_search_tf32" in listing and "| CPU | beam_search | beamjob |" in listing
