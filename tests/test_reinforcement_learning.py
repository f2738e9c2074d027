"""reinforcement-learning/rl_agents.py and cartpole.py: CartPole dynamics against Gymnasium, the two environments
against each other, the replay ring, TD targets and discounted returns against numpy, the budgets,
the configs, and the script end to end (the documented commands with --quick, --bench --json,
--save/--load, and hostile input: one line, exit 2, before any training)."""
import dataclasses, inspect, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

os.environ.setdefault("DEV", "CPU")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "reinforcement-learning" / "rl_agents.py"
sys.path.insert(0, str(SCRIPT.parent))
import common  # noqa: E402,F401  (before tinygrad)
import rl_agents as rl  # noqa: E402
import cartpole as cp  # noqa: E402
from tinygrad import Tensor, dtypes  # noqa: E402
from common.bench import validate  # noqa: E402
from common.cli import UserError  # noqa: E402
from common.files import save_checkpoint  # noqa: E402
from conftest import assert_one_line_error  # noqa: E402


def balancing_action(obs) -> int:
  """A hand-made linear controller that keeps the pole up for 500 steps (reaches truncation)."""
  x, x_dot, theta, theta_dot = obs
  return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)


def random_states(rng, n):
  """States spread over the whole observation range, both inside and outside the limits."""
  return np.stack([rng.uniform(-2.6, 2.6, n), rng.uniform(-3, 3, n), rng.uniform(-0.25, 0.25, n), rng.uniform(-3, 3, n)], 1)


# ---- the environment against Gymnasium ----------------------------------------------------------

@pytest.mark.parametrize("policy", ["random", "balancing"])
def test_numpy_env_matches_gymnasium_episode(policy):
  gym = pytest.importorskip("gymnasium", reason="gymnasium is a test-only extra: pip install gymnasium")
  rng = np.random.default_rng(1)
  for seed in range(3):
    genv = gym.make("CartPole-v1")
    gobs, _ = genv.reset(seed=seed)
    env = cp.CartPole(rng)
    env.reset()
    env.state = np.array(genv.unwrapped.state, dtype=np.float64)
    for t in range(600):
      action = int(rng.integers(2)) if policy == "random" else balancing_action(gobs)
      gobs, greward, gterm, gtrunc, _ = genv.step(action)
      obs, reward, term, trunc = env.step(action)
      np.testing.assert_allclose(obs, gobs, rtol=1e-6, atol=1e-7)
      assert (reward, term, trunc) == (greward, gterm, gtrunc), f"seed {seed} step {t}"
      if gterm or gtrunc: break
    if policy == "balancing": assert t + 1 == cp.MAX_STEPS and trunc and not term   # the time limit, not a fall


def test_batched_env_matches_gymnasium_step():
  gym = pytest.importorskip("gymnasium", reason="gymnasium is a test-only extra: pip install gymnasium")
  rng = np.random.default_rng(0)
  states, actions = random_states(rng, 256).astype(np.float32), rng.integers(0, 2, 256)
  genv = gym.make("CartPole-v1").unwrapped
  genv.reset(seed=0)
  expected, expected_term = [], []
  for s, a in zip(states, actions):
    genv.state, genv.steps_beyond_terminated = s.astype(np.float64), None
    obs, reward, term, trunc, _ = genv.step(int(a))
    expected.append(obs)
    expected_term.append(term)
  env = cp.BatchedCartPole(256)
  env.state.assign(Tensor(states)).realize()
  next_obs, reward, term, trunc, length = env.step(Tensor(actions.astype(np.int32)))
  next_obs, term = next_obs.numpy(), term.numpy()
  np.testing.assert_allclose(next_obs, np.array(expected), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(reward.numpy(), np.ones(256))
  expected_term = np.array(expected_term)
  # float32 against float64: only states within 1e-5 of a limit may disagree
  near = (np.abs(np.abs(next_obs[:, 0]) - cp.X_LIMIT) < 1e-5) | (np.abs(np.abs(next_obs[:, 2]) - cp.THETA_LIMIT) < 1e-5)
  np.testing.assert_array_equal(term[~near], expected_term[~near])
  assert 20 < expected_term.sum() < 236, "the test states should cover both outcomes"
  assert not trunc.numpy().any()


def test_constants_match_gymnasium():
  gym = pytest.importorskip("gymnasium", reason="gymnasium is a test-only extra: pip install gymnasium")
  g = gym.make("CartPole-v1")
  u = g.unwrapped
  assert (u.gravity, u.masscart, u.masspole, u.length, u.force_mag, u.tau) == \
    (cp.GRAVITY, cp.MASS_CART, cp.MASS_POLE, cp.HALF_LENGTH, cp.FORCE, cp.TAU)
  assert (u.theta_threshold_radians, u.x_threshold, g.spec.max_episode_steps) == (cp.THETA_LIMIT, cp.X_LIMIT, cp.MAX_STEPS)


# ---- the two implementations against each other ------------------------------------------------

def test_numpy_and_batched_env_agree_over_an_episode():
  rng = np.random.default_rng(3)
  n = 8
  envs = [cp.CartPole(rng) for _ in range(n)]
  for e in envs: e.reset()
  benv = cp.BatchedCartPole(n)
  benv.state.assign(Tensor(np.stack([e.state for e in envs]).astype(np.float32))).realize()
  for t in range(40):   # long enough for some to fall; compare only still-running ones
    actions = rng.integers(0, 2, n)
    next_obs, _, term, trunc, length = benv.step(Tensor(actions.astype(np.int32)))
    next_obs, term, length = next_obs.numpy(), term.numpy(), length.numpy()
    Tensor.realize(benv.state, benv.steps)
    for i, e in enumerate(envs):
      if e.steps < 0: continue
      obs, _, eterm, etrunc = e.step(int(actions[i]))
      np.testing.assert_allclose(next_obs[i], obs, rtol=1e-4, atol=1e-5)
      assert length[i] == e.steps
      if abs(abs(obs[0]) - cp.X_LIMIT) > 1e-4 and abs(abs(obs[2]) - cp.THETA_LIMIT) > 1e-4: assert term[i] == eterm
      if eterm: e.steps = -1      # the batched one auto-reset; stop comparing this one
  assert any(e.steps < 0 for e in envs) and any(e.steps > 0 for e in envs)


def test_batched_env_truncation_and_auto_reset():
  env = cp.BatchedCartPole(3)
  # env 0: fine, step 499 -> truncated; env 1: about to fall at step 10 -> terminated; env 2: fine, step 10
  env.state.assign(Tensor([[0.0, 0.0, 0.01, 0.0], [0.0, 0.0, 0.2094, 2.0], [0.0, 0.0, -0.01, 0.0]])).realize()
  env.steps.assign(Tensor([499, 10, 10], dtype=dtypes.int32)).realize()
  next_obs, _, term, trunc, length = env.step(Tensor([1, 1, 0], dtype=dtypes.int32))
  next_obs, term, trunc, length = next_obs.numpy(), term.numpy(), trunc.numpy(), length.numpy()
  Tensor.realize(env.state, env.steps)
  assert term.tolist() == [False, True, False] and trunc.tolist() == [True, False, False] and length.tolist() == [500, 11, 11]
  ref = cp.CartPole(np.random.default_rng(0))
  ref.state = np.array([0.0, 0.0, 0.2094, 2.0])
  np.testing.assert_allclose(next_obs[1], ref.step(1)[0], rtol=1e-5)       # the true final state, not the reset one
  state, steps = env.state.numpy(), env.steps.numpy()
  assert steps.tolist() == [0, 0, 11]
  assert np.all(np.abs(state[:2]) <= cp.RESET_BOUND) and not np.allclose(state[1], next_obs[1])
  np.testing.assert_allclose(state[2], next_obs[2])


# ---- DQN pieces against numpy --------------------------------------------------------------------

def small_dqn(**changes) -> rl.DQN:
  return rl.DQN(rl.DQNConfig(**{"hidden": 16, "envs": 4, "buffer": 12, "batch": 8, "learning_starts": 8, **changes}))


def test_replay_ring_holds_real_transitions_and_wraps():
  dqn = small_dqn()
  sched = Tensor([1.0, 12.0]).realize()
  for _ in range(4):     # 16 transitions into a 12-row ring: the 4th write lands on rows 0..3
    dqn.collect_jit(sched, dqn.memory.ptr_var.bind(dqn.memory.pos), dqn.slot_var.bind(0))
    dqn.memory.advance()
  assert (dqn.memory.pos, dqn.memory.size) == (4, 12)
  rows = dqn.memory.table.numpy()
  ref = cp.CartPole(np.random.default_rng(0))
  for row in rows:
    s, action, r, term, s2 = row[0:4], int(row[4]), row[5], row[6], row[7:11]
    ref.state = s.astype(np.float64)
    obs, _, eterm, _ = ref.step(action)
    np.testing.assert_allclose(s2, obs, rtol=1e-5, atol=1e-6)
    assert action in (0, 1) and r == 1.0 and term == float(eterm)
  # the newest write (rows 0..3) continues from the state the third write (rows 8..11) ended in
  np.testing.assert_allclose(rows[0:4, 0:4], rows[8:12, 7:11], rtol=1e-6)


def numpy_q(layers, x):
  ws = [(layer.weight.numpy(), layer.bias.numpy()) for layer in layers if hasattr(layer, "weight")]
  for i, (w, b) in enumerate(ws):
    x = x @ w.T + b
    if i < len(ws) - 1: x = np.maximum(x, 0)
  return x


@pytest.mark.parametrize("double", [False, True])
def test_td_loss_matches_numpy(double):
  dqn = small_dqn(double=double, gamma=0.9)
  for p in rl.get_parameters(dqn.target_net): p.assign(p * 0.5 + 0.1).realize()     # make θ⁻ differ from θ
  rng = np.random.default_rng(0)
  s, s2 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)
  action, term = rng.integers(0, 2, 8), np.array([0, 1, 0, 0, 1, 0, 0, 0])
  rows = np.concatenate([s, action[:, None], np.ones((8, 1)), term[:, None], s2], 1).astype(np.float32)
  loss = dqn.td_loss(*rl.ReplayMemory.unpack(Tensor(rows))).item()
  q, q_next_t, q_next_online = numpy_q(dqn.q_net, s), numpy_q(dqn.target_net, s2), numpy_q(dqn.q_net, s2)
  q_next = q_next_t[np.arange(8), q_next_online.argmax(1)] if double else q_next_t.max(1)
  d = q[np.arange(8), action] - (1.0 + 0.9 * (1 - term) * q_next)
  huber = np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5)
  assert loss == pytest.approx(huber.mean(), rel=1e-5)


def test_polyak_target_update():
  dqn = small_dqn()
  before = [p.numpy() for p in rl.get_parameters(dqn.target_net)]
  for p in dqn.params: p.assign(p + 1.0).realize()
  dqn.update_target(tau=0.25)
  for b, o, t in zip(before, dqn.params, rl.get_parameters(dqn.target_net)):
    np.testing.assert_allclose(t.numpy(), 0.25 * o.numpy() + 0.75 * b, rtol=1e-6)


def test_learning_rate_decays_linearly_over_the_env_step_budget():
  dqn = small_dqn(lr=1e-3, lr_end=1e-4, steps=1000)
  for steps, expected in [(0, 1e-3), (500, 5.5e-4), (1000, 1e-4), (2000, 1e-4)]:
    dqn.set_lr(steps)
    np.testing.assert_allclose(dqn.opt.lr.numpy(), [expected], rtol=1e-6)


def test_several_gradient_steps_per_iteration_all_train():
  # one JIT'd iteration with grad_steps 3 must move the weights by three Adam steps, not one (the replay
  # ratio the docstring and --dqn-envs/--grad-steps help state: grad-steps per iteration of dqn-envs env steps)
  moved = []
  for k in (1, 3):
    rl.Tensor.manual_seed(0)
    dqn = small_dqn(grad_steps=k, lr=1e-2, lr_end=1e-2)
    sched = Tensor([1.0, 12.0]).realize()
    for _ in range(3):
      dqn.collect_jit(sched, dqn.memory.ptr_var.bind(dqn.memory.pos), dqn.slot_var.bind(0))
      dqn.memory.advance()
    w0 = dqn.params[0].numpy()
    dqn.iterate_jit(sched, dqn.memory.ptr_var.bind(dqn.memory.pos), dqn.slot_var.bind(0))
    moved.append(np.abs(dqn.params[0].numpy() - w0).max())
  assert moved[1] > 2 * moved[0], moved                 # Adam's first steps are ~lr each: 3 steps ≈ 3× one


def test_replay_ratio_is_stated_the_same_in_help_and_docstring():
  help_text = " ".join(subprocess_help().split())
  assert "replay ratio = grad-steps / dqn-envs" in help_text and "one gradient step each" not in help_text
  assert "grad-steps / dqn-envs gradient steps per env step (2 / 4 = 0.5 with the defaults)" in " ".join(rl.__doc__.split())
  assert rl.DQNConfig().grad_steps / rl.DQNConfig().envs == 0.5


def test_gradient_clipping_bounds_global_norm():
  from tinygrad import nn
  w = Tensor([[3.0, 4.0]])
  opt = nn.optim.SGD([w], lr=1.0)
  rl.gradient_step((w * Tensor([[30.0, 40.0]])).sum(), [w], opt, clip_norm=5.0)   # gradient (30, 40), norm 50
  np.testing.assert_allclose(w.numpy(), [[3.0 - 3.0, 4.0 - 4.0]], atol=1e-5)


# ---- REINFORCE pieces ------------------------------------------------------------------------------

def small_reinforce(**changes) -> rl.Reinforce:
  return rl.Reinforce(rl.ReinforceConfig(**{"hidden": 8, "batch": 4, **changes}))


def test_discounted_returns_match_numpy():
  agent = small_reinforce(batch=3, gamma=0.97)
  lengths = [5, 500, 137]
  mask = np.zeros((cp.MAX_STEPS, 3), np.float32)
  for i, n in enumerate(lengths): mask[:n, i] = 1
  got = agent.discounted_returns(Tensor(mask)).numpy()
  for i, n in enumerate(lengths):
    expected, g = np.zeros(cp.MAX_STEPS), 0.0
    for t in reversed(range(n)):
      g = 1.0 + 0.97 * g
      expected[t] = g
    np.testing.assert_allclose(got[:, i], expected, rtol=1e-5, atol=1e-5)


def test_reinforce_rollout_records_whole_episodes():
  agent = small_reinforce()
  lengths = agent.run_episodes()
  mask = agent.mask_buf.numpy()
  for i, n in enumerate(lengths):
    assert 8 <= n <= cp.MAX_STEPS and mask[:int(n), i].all() and not mask[int(n):, i].any()
  # recorded observations follow the dynamics: s_{t+1} = step(s_t, a_t) while the episode lasts
  obs, act = agent.obs_buf.numpy(), agent.action_buf.numpy()
  ref = cp.CartPole(np.random.default_rng(0))
  for t in range(int(lengths[0]) - 1):
    ref.state = obs[t, 0].astype(np.float64)
    np.testing.assert_allclose(ref.step(int(act[t, 0]))[0], obs[t + 1, 0], rtol=1e-5, atol=1e-6)


def test_rollout_acts_with_the_current_weights():
  """A policy pushed to 'always right' must show up in the next rollout (the JIT must not keep the init)."""
  agent = small_reinforce()
  agent.run_episodes()
  agent.update_jit()
  agent.policy_head.bias.assign(Tensor([-100.0, 100.0])).realize()
  lengths = agent.run_episodes()
  actions = agent.action_buf.numpy()
  assert all(actions[:int(n), i].all() for i, n in enumerate(lengths)) and lengths.max() < 15


# ---- budgets, configs and the update in one place ----------------------------------------------------

def never_solved(n=4):
  """An evaluation that never reaches the target, so only the budget can stop training."""
  def evaluate(): return np.zeros(n)
  return evaluate


def test_episode_budget_stops_dqn_at_the_nth_episode():
  dqn = rl.DQN(rl.DQNConfig(hidden=16, envs=4, buffer=400, batch=8, learning_starts=8, episodes=12, eval_every=10**6))
  hist = dqn.train(never_solved())
  assert hist.stopped == "episode budget" and 12 <= len(hist.returns) < 12 + 4, (hist.stopped, len(hist.returns))
  assert hist.grad_steps > 0        # (at most 4 episodes end per iteration: stopping later would show 16 or more)


def test_env_step_budget_stops_dqn_first_when_it_is_smaller():
  dqn = rl.DQN(rl.DQNConfig(hidden=16, envs=4, buffer=400, batch=8, learning_starts=8, steps=40, episodes=1000, eval_every=10**6))
  hist = dqn.train(never_solved())
  assert hist.stopped == "env-step budget" and hist.env_steps == 40


def test_episode_budget_for_reinforce():
  agent = small_reinforce(episodes=8, eval_every=10**6)
  hist = agent.train(never_solved())
  assert hist.stopped == "episode budget" and len(hist.returns) == 8 and len(hist.losses) == 2


def test_divergence_is_one_line_not_a_silent_failure():
  dqn = rl.DQN(rl.DQNConfig(hidden=16, envs=4, buffer=400, batch=8, learning_starts=8, lr=1e30, lr_end=1e30, clip_grad=0, steps=200,
                            eval_every=10**6))
  with pytest.raises(UserError, match="DQN diverged.*smaller --lr"): dqn.train(never_solved())


def test_agents_take_frozen_configs_and_the_update_fits_one_screen():
  """Frozen: nothing (the bench included, which once set args.batch per case) can change a config in use."""
  cfg = rl.DQNConfig(hidden=16, buffer=12, batch=8, learning_starts=8)
  with pytest.raises(dataclasses.FrozenInstanceError): cfg.batch = 32
  dqn = rl.DQN(cfg)
  assert dqn.cfg is cfg and not hasattr(dqn, "train_jit") and not hasattr(dqn, "a")
  update = inspect.getsource(rl.DQN.td_loss) + inspect.getsource(rl.DQN.update)
  assert len(update.splitlines()) <= 20 and "gradient_step" in update and "huber" in update


def test_bench_takes_the_flags_common_compare_passes():
  args = rl.parse_args(["--bench", "--json", "/tmp/x.json", "--out", "/tmp/o", "--quick"])     # common.compare's command line
  assert args.bench and args.out == "/tmp/o"


def test_quick_changes_defaults_only():
  args = rl.parse_args(["--quick", "--eval-episodes", "7", "--dqn-steps", "5000"])
  assert (args.eval_episodes, args.dqn_steps, args.episodes, args.target_return) == (7, 5000, 300, 100.0)
  args = rl.parse_args(["--quick", "--episodes", "500", "--target-return", "200"])
  assert (args.eval_episodes, args.dqn_steps, args.episodes, args.target_return) == (20, 10_000, 500, 200.0)
  cfgs = rl.agent_configs(rl.parse_args(["--episodes", "500", "--hidden", "32"]))
  assert cfgs["dqn"].episodes == cfgs["reinforce"].episodes == 500 and cfgs["dqn"].hidden == cfgs["reinforce"].hidden == 32


# ---- the script end to end: the documented commands (with --quick) --------------------------------------

def run(*args, timeout=300):
  env = {**os.environ, "DEV": "CPU"}
  return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def subprocess_help() -> str:
  r = run("--help")
  assert r.returncode == 0, r.stderr
  return r.stdout


@pytest.mark.slow
def test_documented_dqn_command_trains_saves_and_loads(tmp_path):
  ckpt, timings = tmp_path / "agents.safetensors", tmp_path / "train.json"
  r = run("--agent", "dqn", "--episodes", "500", "--quick", "--out", str(tmp_path), "--save", str(ckpt), "--json", str(timings))
  assert r.returncode == 0, r.stdout + r.stderr
  rec = json.loads((tmp_path / "summary.json").read_text())["agents"]["dqn"]
  assert rec["eval_mean"] >= 100 and rec["episodes"] <= 500 + 3 and rec["stopped"] in ("solved", "episode budget", "env-step budget"), rec
  assert "PASS: dqn mean greedy return" in r.stdout and (tmp_path / "dqn_curve.png").stat().st_size > 1000
  cases = {x["case"] for x in validate(json.loads(timings.read_text()))}       # --json outside --bench: the training's records
  assert cases == {"dqn train to solve (quick budget)", "dqn greedy evaluation (20 episodes)"}
  r = run("--load", str(ckpt), "--agent", "dqn", "--quick", "--out", str(tmp_path / "loaded"))
  assert r.returncode == 0, r.stdout + r.stderr
  assert json.loads((tmp_path / "loaded" / "summary.json").read_text())["agents"]["dqn"]["eval_mean"] >= 100
  assert not (tmp_path / "loaded" / "dqn_curve.png").exists()


@pytest.mark.slow
def test_documented_reinforce_command(tmp_path):
  r = run("--agent", "reinforce", "--episodes", "500", "--quick", "--out", str(tmp_path))
  assert r.returncode == 0, r.stdout + r.stderr
  rec = json.loads((tmp_path / "summary.json").read_text())["agents"]["reinforce"]
  assert rec["eval_mean"] >= 100 and rec["episodes"] <= 500 and "PASS: reinforce mean greedy return" in r.stdout, rec


@pytest.mark.slow
def test_documented_bench_command_quick_json(tmp_path):
  out = tmp_path / "bench.json"
  r = run("--bench", "--quick", "--episodes", "4", "--eval-episodes", "5", "--json", str(out))     # both agents train on 4 episodes
  assert r.returncode == 0, r.stdout + r.stderr
  cases = {rec["case"] for rec in validate(json.loads(out.read_text()))}
  assert {"python env step (numpy, 1 env)", "batched env step N=64", "mlp 4-128-128-2 Adam step B=128"} <= cases
  assert any(c.startswith("dqn train step B=32") for c in cases)
  assert {"dqn train to solve (quick budget)", "reinforce train to solve (quick budget)"} <= cases
  assert "| case |" in r.stdout


def test_bench_cases_time_only_what_was_asked(tmp_path):
  # a BEAM run of the steps alone (--cases envs,steps) need not train to solve
  out = tmp_path / "bench.json"
  r = run("--bench", "--quick", "--cases", "envs", "--json", str(out))
  assert r.returncode == 0, r.stdout + r.stderr
  cases = {rec["case"] for rec in validate(json.loads(out.read_text()))}
  assert cases == {"python env step (numpy, 1 env)", "batched env step N=1", "batched env step N=64"}, cases


# ---- hostile input: one line, exit 2, before any training ------------------------------------------------

def refused(*args, fragments=()):
  """As a user runs it: one line, exit 2, and nothing trained (no agent's banner on stdout)."""
  r = run(*args, timeout=120)
  assert_one_line_error(r, *fragments)
  assert "== DQN" not in r.stdout and "== REINFORCE" not in r.stdout, r.stdout


def parse_refused(capsys, *args) -> str:
  """The parser's refusal in-process (the same code the script runs first): exit 2, one line."""
  with pytest.raises(SystemExit) as e: rl.parse_args(list(args))
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
  return err


@pytest.mark.parametrize("args, fragment", [
  (["--lr", "inf"], "not a finite number"), (["--lr", "nan"], "not a finite number"), (["--gamma", "nan"], "not a finite"),
  (["--pg-lr", "-1"], "must be > 0"), (["--clip-grad", "inf"], "not a finite"), (["--entropy", "nan"], "not a finite"),
  (["--tau", "0"], "between"), (["--target-return", "600"], "between 1 and 500"), (["--target-return", "inf"], "not a finite"),
  (["--gamma", "1.5"], "between 0 and 1"), (["--dqn-envs", "0"], "must be > 0"), (["--episodes", "0"], "must be > 0"),
  (["--episodes", "ten"], "not an integer"), (["--learning-starts", "-5"], ">= 0"), (["--seed", "-1"], ">= 0"),
  (["--seed", str(2 ** 40)], "below 2**32"), (["--agent", "ppo"], "invalid choice"), (["--pg-episodes", "5"], "unrecognized"),
  (["--buffer", "1001", "--dqn-envs", "4"], "multiple"), (["--eps-start", "0.1", "--eps-end", "0.5"], "--eps-end"),
  (["--buffer", "64", "--batch", "128"], "smaller than --batch"), (["--learning-starts", "64"], "at least --batch"),
  (["--dqn-steps", "500"], "leaves no training"), (["--grad-steps", "65"], "at most 64"),
  (["--agent", "reinforce", "--lr", "0.1"], "--lr is a DQN flag"), (["--agent", "dqn", "--pg-batch", "8"], "--pg-batch is a REINFORCE flag"),
  (["--bench", "--save", "x.safetensors"], "--bench"), (["--bench", "--load", "x.safetensors"], "--bench"),
  (["--cases", "envs"], "add --bench"), (["--bench", "--cases", "envs,train"], "choose from envs,steps,solve"),
  (["--load", "x.safetensors", "--save", "y.safetensors"], "--load evaluates"), (["--load", "x.safetensors", "--episodes", "5"], "--load evaluates"),
  (["--load", "x.safetensors", "--hidden", "16"], "checkpoint"), (["--load", "x.safetensors", "--no-double"], "--double"),
  (["--save", "/proc/a.safetensors"], "cannot be written"), (["--save", "/dev/null"], "not a regular file"), (["--save", "/"], "is a folder"),
  (["--json", "/proc/t.json"], "cannot be written"), (["--json", "/sys/t.json"], "cannot be written"), (["--json", "/tmp/"], "is a folder"),
])
def test_bad_flags(capsys, args, fragment):
  assert fragment in parse_refused(capsys, *args)


def test_bad_flags_as_run(tmp_path):
  (tmp_path / "file").write_text("x")
  refused("--lr", "inf", fragments=("--lr", "not a finite number"))
  refused("--quick", "--out", "/proc/rl", fragments=("--out", "cannot be written"))
  refused("--quick", "--out", str(tmp_path / "file"), fragments=("--out", "not a folder"))
  refused("--hidden", "100000", "--out", str(tmp_path / "o"), fragments=("GB", "more than this machine's"))   # once ENOMEM after training


@pytest.mark.parametrize("args", [["--hidden", "100000"], ["--agent", "reinforce", "--pg-batch", "10000000"], ["--buffer", "40000000000"],
                                  ["--eval-episodes", "10000000000"]])
def test_sizes_that_cannot_fit_are_refused(args):
  with pytest.raises(UserError, match="GB, more than this machine's"): rl.check_memory(rl.agent_configs(rl.parse_args(args)))
  rl.check_memory(rl.agent_configs(rl.parse_args([])))        # the defaults fit


def test_bad_checkpoints(tmp_path):
  cfgs = rl.agent_configs(rl.parse_args([]))
  with pytest.raises(UserError, match="no such file"): rl.load_agents(str(tmp_path / "missing.safetensors"), cfgs)
  junk = tmp_path / "junk.safetensors"
  junk.write_bytes(b"not a safetensors file at all")
  with pytest.raises(UserError, match="not a readable safetensors"): rl.load_agents(str(junk), cfgs)
  state = {f"dqn.{k}": v for k, v in small_dqn().state_dict().items()}
  other = save_checkpoint(state, tmp_path / "other.safetensors", {"agents": ["dqn"]}, script="generative/generative_models.py", model="ddpm")
  with pytest.raises(UserError, match="written by generative/generative_models.py"): rl.load_agents(str(other), cfgs)
  ours = save_checkpoint(state, tmp_path / "dqn16.safetensors", {"agents": ["dqn"], "dqn_hidden": 16}, script=rl.SCRIPT, model=rl.MODEL)
  with pytest.raises(UserError, match="holds no reinforce agent"): rl.load_agents(str(ours), cfgs)
  assert rl.load_agents(str(ours), {"dqn": cfgs["dqn"]})["dqn"].cfg.hidden == 16       # the width comes from the file
  lying = save_checkpoint(state, tmp_path / "lying.safetensors", {"agents": ["dqn"], "dqn_hidden": 32}, script=rl.SCRIPT, model=rl.MODEL)
  with pytest.raises(UserError, match="has shape"): rl.load_agents(str(lying), {"dqn": cfgs["dqn"]})
  no_width = save_checkpoint(state, tmp_path / "nowidth.safetensors", {"agents": ["dqn"]}, script=rl.SCRIPT, model=rl.MODEL)
  with pytest.raises(UserError, match="bad dqn metadata"): rl.load_agents(str(no_width), {"dqn": cfgs["dqn"]})
