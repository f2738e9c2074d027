"""One real `--quick` project run on the fake Orin (`TEGRA_FAKE=1 DEV=NV`: tinygrad's NV runtime through the backend, every
kernel launched through a QMD and run by the fake GPU's Python emulator) gives the same numbers as on the CPU device.

REINFORCE on CartPole, kept small (2 episodes, batch 2, hidden 8, 2 evaluation episodes): the greedy returns, the
evaluations and the numpy-env replay of the trained policy all depend on every weight the training produced."""
import json
import numpy as np
import pytest
from conftest import ROOT, run_py

ARGS = ("reinforcement-learning/rl_agents.py", "--quick", "--agent", "reinforce", "--episodes", "2", "--pg-batch", "2", "--hidden", "8",
        "--eval-episodes", "2", "--pg-eval-every", "2")
NUMBERS = ("env_steps", "episodes", "grad_steps", "eval_mean", "eval_std", "eval_min", "numpy_env_return", "evals", "stopped", "solved_at")

def summary(out, **env) -> dict:
  r = run_py(*ARGS, "--out", str(out), env=env, timeout=900)
  assert "Traceback" not in r.stderr and (out / "summary.json").exists(), (r.returncode, r.stdout[-1000:], r.stderr[-3000:])
  return json.loads((out / "summary.json").read_text())["agents"]["reinforce"]

@pytest.mark.slow
def test_reinforce_quick_run_on_the_fake_orin_matches_the_cpu(tmp_path):
  cpu = summary(tmp_path / "cpu", DEV="CPU")
  fake = summary(tmp_path / "fake", DEV="NV", TEGRA_FAKE="1", PYTHONPATH=str(ROOT))
  assert cpu["episodes"] >= 2 and cpu["evals"], cpu
  for k in NUMBERS:
    if isinstance(cpu[k], (str, type(None))): assert fake[k] == cpu[k], (k, fake[k], cpu[k])
    else: np.testing.assert_allclose(np.array(fake[k], dtype=float), np.array(cpu[k], dtype=float), rtol=1e-4, err_msg=k)
