#!/usr/bin/env python3
"""CartPole solved twice in tinygrad: DQN (value-based) and REINFORCE (policy gradient), with the
environment itself running as tensors on the device.

THE PROBLEM. CartPole-v1 (Gymnasium's exact dynamics): a pole hinged on a cart; each step the agent
pushes the cart left or right with 10 N and gets +1 while the pole stays within ±12° and the cart
within ±2.4 m. An episode ends by *termination* (the pole fell: no future reward) or by *truncation*
at 500 steps (a time limit: the state still has a future, we just stopped looking). Solved = mean
return ≥ 475 over 100 greedy episodes.

THE ENVIRONMENT, twice. State s = (x, ẋ, θ, θ̇); with F = ±10, m_c = 1, m_p = 0.1, l = 0.5 (half the
pole), g = 9.8, τ = 0.02 s, Euler integration:
    temp = (F + m_p·l·θ̇²·sin θ) / (m_c + m_p)
    θ̈    = (g·sin θ − cos θ·temp) / (l·(4/3 − m_p·cos²θ / (m_c + m_p)))
    ẍ    = temp − m_p·l·θ̈·cos θ / (m_c + m_p)
    x ← x + τẋ,  ẋ ← ẋ + τẍ,  θ ← θ + τθ̇,  θ̇ ← θ̇ + τθ̈
`CartPole` is the plain numpy version (float64, one episode, for play and as a reference).
`BatchedCartPole` steps N environments at once as a (N, 4) tinygrad tensor and resets finished ones
in the same call, so act → step → store runs on the device inside one TinyJit'd function.

DQN (Mnih et al. 2015). A network Q_θ: (B, 4) → (B, 2) estimates the return of each action. Acting is
ε-greedy (ε decays linearly from --eps-start to --eps-end over --eps-steps env steps). Transitions
(s, a, r, terminated, s') go to a preallocated ring buffer on the device (capacity, 11 floats per row).
Each iteration steps --dqn-envs environments and takes --grad-steps gradient steps, each on a fresh
minibatch of B rows (replay ratio = grad-steps / dqn-envs = 0.5 gradient steps per env step):
    y      = r + γ·(1 − terminated)·max_a' Q_θ⁻(s', a')           with --no-double (vanilla DQN)
    y      = r + γ·(1 − terminated)·Q_θ⁻(s', argmax_a' Q_θ(s', a'))   double DQN, the default
    L(θ)   = mean Huber(Q_θ(s, a) − y),  Huber(d) = ½d² if |d| < 1 else |d| − ½
y is the TD target: a truncated episode still bootstraps, only a fall does not. Double DQN lets the
online net pick a' and the target net value it, which removes the max operator's upward bias.
θ⁻ is a target network: every --target-every gradient steps θ⁻ ← τθ + (1 − τ)θ⁻ (τ = 1: hard copy).
Gradients are clipped to global norm --clip-grad; Adam takes the step, with a learning rate that decays
linearly from --lr to --lr-end over the budget (large steps while Q is far off, small ones once a good
policy has to be kept rather than found).

REINFORCE (Williams 1992). A softmax policy π_θ(a|s) = softmax(f_θ(s)). --pg-batch episodes run in
parallel to the end; with r_t = 1 while the episode lasts, the discounted returns of all steps are one
matmul with a (T, T) discount matrix Γ[t, k] = γ^(k−t) for k ≥ t: G = Γ·r (T = 500, shapes (T, N)).
Returns are normalized over the batch, Ĝ = (G − mean)/std, and
    L(θ) = −mean_t[ log π_θ(a_t|s_t)·(Ĝ_t − b(s_t)) ] − β·mean_t H(π_θ(·|s_t)) + ½·mean_t (V(s_t) − Ĝ_t)²
where b = V is an optional learned baseline (a value head on the shared hidden layer, --baseline) and
β = --entropy. ∇θ L is the policy-gradient estimate (the baseline lowers its variance, not its mean).

EVALUATION. Every --eval-every env steps (DQN) or --pg-eval-every episodes (REINFORCE), 100 episodes run
in parallel with greedy actions (argmax). Training stops when their mean return ≥ 475; then a fresh
100-episode greedy evaluation decides PASS/FAIL, and one episode is replayed on the numpy env.

RUN IT.
    NV=1 python3 reinforcement-learning/rl_agents.py            # Jetson Orin (tinygrad's NV backend)
    python3 reinforcement-learning/rl_agents.py                 # laptop / CPU (DEV=CPU)
    python3 reinforcement-learning/rl_agents.py --agent dqn --no-double --seed 1      # vanilla DQN
    python3 reinforcement-learning/rl_agents.py --save out/agents.safetensors   # then --load it to evaluate
    JITBEAM=2 python3 reinforcement-learning/rl_agents.py --bench --json out/rl_bench.json
Outputs under --out (default out/reinforcement-learning/): <agent>_curve.png (return per episode with a
moving average, evaluations, and the loss), summary.json.
--quick: 10 000 DQN env steps and 300 REINFORCE episodes, 20 evaluation episodes; the bar is "learns
measurably": greedy mean return ≥ 100 for each agent (an untrained greedy policy scores ≈ 10, a random one ≈ 22).

EXPECTED RESULTS. Measured with default settings on a shared 2-core x86 CPU (DEV=CPU, tinygrad 0.14.0;
details in README.md). REINFORCE solved seeds 0, 1, 2 after 200, 200, 300 episodes (~10 s of CPU time
each). DQN solved seeds 0, 1, 2 at 57 500, 55 000 and 70 000 env steps (579, 506, 626 episodes; 155,
141, 179 s of CPU time, 5–7 min wall under load), each with a fresh greedy mean of 500.0, and seeds 3
and 4, held out, at 65 000 and 62 500. The DQN defaults were tuned on seeds 0–2: the first defaults
(vanilla DQN, replay ratio 0.25, constant lr) failed seed 0; double DQN, --grad-steps 2 and the lr decay
were then tried as one change, with hard or Polyak target updates on seed 0 (both solved it; hard
kept), and the result run once on every seed. DQN on CartPole oscillates: its evaluations rise and
fall by hundreds between checks, which is why training stops at the first passing evaluation and a
fresh one decides PASS/FAIL. On a Jetson Orin the runs are expected to be bound by kernel-launch
latency (tiny networks), not FLOPs: expected, not measured.
"""
import common   # first: turns NV=1 / CUDA=1 / CPU=1 into DEV=... before tinygrad reads it
import argparse, math, sys, time
from pathlib import Path
import numpy as np
from tinygrad import Tensor, TinyJit, Variable, nn, dtypes
from tinygrad.helpers import Context, tqdm
from tinygrad.nn.state import get_state_dict, get_parameters, load_state_dict
import common.bench, common.device
from common import UserError, cli
from common.files import save_json, save_checkpoint, load_checkpoint, check_state_matches, out_dir
from common.plots import figure, save_figure, moving_average

PROJECT = "reinforcement-learning"

# ---- CartPole-v1 constants (Gymnasium) ---------------------------------------------------------
GRAVITY, MASS_CART, MASS_POLE, HALF_LENGTH = 9.8, 1.0, 0.1, 0.5
TOTAL_MASS, POLE_MASS_LENGTH = MASS_CART + MASS_POLE, MASS_POLE * HALF_LENGTH
FORCE, TAU = 10.0, 0.02
THETA_LIMIT, X_LIMIT = 12 * 2 * math.pi / 360, 2.4     # 0.2095 rad, 2.4 m
RESET_BOUND, MAX_STEPS, SOLVED_RETURN = 0.05, 500, 475.0
OBS_DIM, N_ACTIONS = 4, 2


class CartPole:
  """One CartPole-v1 in numpy, float64 like Gymnasium's, for single-episode play and as a reference."""
  def __init__(self, rng: np.random.Generator):
    self.rng, self.state, self.steps = rng, np.zeros(4), 0

  def reset(self) -> np.ndarray:
    self.state, self.steps = self.rng.uniform(-RESET_BOUND, RESET_BOUND, size=4), 0
    return self.state.astype(np.float32)

  def step(self, action: int):
    """-> (observation, reward, terminated, truncated), Gymnasium's order and conventions."""
    x, x_dot, theta, theta_dot = self.state
    force = FORCE if action == 1 else -FORCE
    cos, sin = math.cos(theta), math.sin(theta)
    temp = (force + POLE_MASS_LENGTH * theta_dot ** 2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos ** 2 / TOTAL_MASS))
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    x, x_dot = x + TAU * x_dot, x_dot + TAU * x_acc             # Euler: positions use the old velocities
    theta, theta_dot = theta + TAU * theta_dot, theta_dot + TAU * theta_acc
    self.state, self.steps = np.array([x, x_dot, theta, theta_dot]), self.steps + 1
    terminated = bool(abs(x) > X_LIMIT or abs(theta) > THETA_LIMIT)
    truncated = self.steps >= MAX_STEPS                         # a time limit, not a failure
    return self.state.astype(np.float32), 1.0, terminated, truncated


class BatchedCartPole:
  """N CartPoles as one (N, 4) float32 tensor on the device. `step` advances all of them and resets
  the finished ones in place (auto-reset), so it can live inside a TinyJit'd loop body."""
  def __init__(self, n: int):
    self.n = n
    self.state = Tensor.zeros(n, 4).contiguous().realize()
    self.steps = Tensor.zeros(n, dtype=dtypes.int32).contiguous().realize()
    self.reset()

  def reset(self):
    Tensor.realize(self.state.assign(Tensor.uniform(self.n, 4, low=-RESET_BOUND, high=RESET_BOUND)),
                   self.steps.assign(Tensor.zeros(self.n, dtype=dtypes.int32)))

  @property
  def obs(self) -> Tensor:
    """The current observations (N, 4). A new handle: `step` assigns `self.state` in place, and a
    transition must keep referring to the state it started from."""
    return self.state.detach()

  def step(self, action: Tensor):
    """action (N,) bool/int -> (next_obs (N, 4), reward (N,), terminated (N,) bool, truncated (N,) bool,
    episode_length (N,) int). next_obs is the true final observation of a finished episode (what the
    TD target needs); `self.state` already holds the fresh start of the next one. Lazy: realize after."""
    x, x_dot, theta, theta_dot = [self.state[:, i] for i in range(4)]
    force = (action != 0).where(FORCE, -FORCE)
    cos, sin = theta.cos(), theta.sin()
    temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS))
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    next_obs = Tensor.stack(x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc, dim=1)
    terminated = (next_obs[:, 0].abs() > X_LIMIT) | (next_obs[:, 2].abs() > THETA_LIMIT)
    steps = self.steps + 1
    truncated = steps >= MAX_STEPS
    done = terminated | truncated
    fresh = Tensor.uniform(self.n, 4, low=-RESET_BOUND, high=RESET_BOUND)
    # the new state is computed into its own buffer first: one kernel may not read (x, θ) and write them
    self.state.assign(done.unsqueeze(1).where(fresh, next_obs).contiguous())
    self.steps.assign(done.where(0, steps))
    return next_obs, Tensor.ones(self.n), terminated, truncated, steps


def mlp(sizes: list[int]) -> list:
  """[4, 128, 128, 2] -> Linear, relu, Linear, relu, Linear (PyTorch-style uniform init)."""
  layers: list = []
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers += [nn.Linear(fan_in, fan_out)] + ([Tensor.relu] if i < len(sizes) - 2 else [])
  return layers


def realized(params: list[Tensor]) -> list[Tensor]:
  """Give freshly initialized weights their own buffers now. Left lazy, a TinyJit'd function would
  capture the kernels that *compute* the initial values, and keep acting with them after training."""
  Tensor.realize(*params)
  return params


def gradient_step(loss: Tensor, params: list[Tensor], opt: nn.optim.Optimizer, clip_norm: float) -> None:
  """∇θ L for exactly these parameters, optional clipping to global norm, one optimizer step."""
  grads = loss.gradient(*params)
  if clip_norm > 0:
    norm = sum((g * g).sum() for g in grads).sqrt()
    scale = (clip_norm / (norm + 1e-6)).minimum(1.0)
    grads = [g * scale for g in grads]
  for p, g in zip(params, grads): p.grad = g
  with Context(TRAINING=1): opt.step()


def log_eval(name: str, hist: dict, mean_return: float):
  """One line per greedy evaluation, so logs (no progress bar off a terminal) show the learning."""
  recent = np.mean(hist["returns"][-20:]) if hist["returns"] else 0.0
  line = (f"{name}: {hist['env_steps']:>7} env steps, {len(hist['returns']):>5} episodes | "
          f"training return (last 20) {recent:6.1f} | greedy eval {mean_return:6.1f}")
  tqdm.write(line) if sys.stderr.isatty() else print(line, flush=True)   # above the bar on a terminal


# ---- DQN ---------------------------------------------------------------------------------------

class ReplayMemory:
  """Preallocated ring of transitions on the device, one row of 11 floats each:
  s (4) | a | r | terminated | s' (4). Writes go to rows [ptr, ptr + N) with ptr a bound Variable,
  so the same compiled kernels serve every position."""
  S, A, R, TERM, S2 = slice(0, 4), 4, 5, 6, slice(7, 11)

  def __init__(self, capacity: int, n_envs: int):
    self.capacity, self.n_envs = capacity, n_envs
    self.table = Tensor.zeros(capacity, 11).contiguous().realize()
    self.ptr_var = Variable("replay_ptr", 0, capacity - n_envs)
    self.pos, self.size = 0, 0

  def store(self, ptr, s, a, r, terminated, s2) -> Tensor:
    rows = Tensor.cat(s, a.float().unsqueeze(1), r.unsqueeze(1), terminated.float().unsqueeze(1), s2, dim=1)
    return self.table[ptr:ptr + self.n_envs].assign(rows)

  def advance(self):
    """Host-side bookkeeping after each store: next write position, number of valid rows."""
    self.pos = (self.pos + self.n_envs) % self.capacity
    self.size = min(self.size + self.n_envs, self.capacity)

  def sample(self, batch: int, size: Tensor) -> Tensor:
    """Uniform minibatch (B, 11) of rows from the first `size` (a (1,) tensor, so the kernel never changes)."""
    return self.table[(Tensor.rand(batch) * size).cast(dtypes.int32)]   # a gather

  @classmethod
  def unpack(cls, rows: Tensor):
    """(B, 11) -> s (B, 4), a (B,) int, r (B,), terminated (B,) as 0/1, s' (B, 4)"""
    return rows[:, cls.S], rows[:, cls.A].cast(dtypes.int32), rows[:, cls.R], rows[:, cls.TERM], rows[:, cls.S2]


class DQN:
  LOG = 250     # iterations between reads of the on-device log (one host sync per read)

  def __init__(self, a):
    self.a = a
    self.q_net = mlp([OBS_DIM, a.hidden, a.hidden, N_ACTIONS])
    self.target_net = mlp([OBS_DIM, a.hidden, a.hidden, N_ACTIONS])
    self.params = realized(get_parameters(self.q_net))
    self.opt = nn.optim.Adam(self.params, lr=a.lr)
    self.update_target(tau=1.0)
    self.env = BatchedCartPole(a.dqn_envs)
    self.memory = ReplayMemory(a.buffer, a.dqn_envs)
    self.loss_log = Tensor.zeros(self.LOG).contiguous().realize()
    self.return_log = Tensor.zeros(self.LOG, a.dqn_envs).contiguous().realize()   # episode length at its end, else 0
    self.slot_var = Variable("log_slot", 0, self.LOG - 1)
    self.collect_jit, self.iterate_jit, self.train_jit = TinyJit(self.collect), TinyJit(self.iterate), TinyJit(self.train_step)
    self.target_jit = TinyJit(lambda: self.update_target(a.tau))     # Polyak updates may run every step

  def q_values(self, obs: Tensor) -> Tensor: return obs.sequential(self.q_net)   # (B, 4) -> (B, 2)

  def update_target(self, tau: float):
    """θ⁻ ← τθ + (1 − τ)θ⁻"""
    for t, o in zip(get_parameters(self.target_net), self.params): t.assign(tau * o.detach() + (1 - tau) * t)
    Tensor.realize(*get_parameters(self.target_net))

  def act(self, obs: Tensor, eps: Tensor) -> Tensor:
    """ε-greedy: a random action with probability ε, else argmax_a Q(s, a). (N, 4) -> (N,) int."""
    n = obs.shape[0]
    greedy = self.q_values(obs).argmax(-1)
    explore = Tensor.rand(n) < eps
    return explore.where((Tensor.rand(n) < 0.5).cast(dtypes.int32), greedy)

  def collect(self, sched: Tensor, ptr, slot):
    """One step of every environment; the transitions go into the replay ring. sched = [ε, replay size]."""
    s = self.env.obs
    a = self.act(s, sched[0])
    s2, r, terminated, truncated, length = self.env.step(a)
    # store first (it reads the old state), then commit the environment's new state
    Tensor.realize(self.memory.store(ptr, s, a, r, terminated, s2),
                   self.return_log[slot:slot + 1].assign((terminated | truncated).where(length, 0).float().unsqueeze(0)))
    Tensor.realize(self.env.state, self.env.steps)

  def td_loss(self, rows: Tensor) -> Tensor:
    """Huber TD loss of a minibatch of replay rows (B, 11)."""
    s, a, r, terminated, s2 = ReplayMemory.unpack(rows)
    q_sa = (self.q_values(s) * a.one_hot(N_ACTIONS)).sum(-1)                        # Q_θ(s, a), (B,)
    q_next_target = s2.sequential(self.target_net).detach()                          # Q_θ⁻(s', ·), (B, 2)
    if self.a.double:
      best_next = self.q_values(s2).detach().argmax(-1)                              # chosen by θ, valued by θ⁻
      q_next = (q_next_target * best_next.one_hot(N_ACTIONS)).sum(-1)
    else:
      q_next = q_next_target.max(-1)
    td_target = r + self.a.gamma * (1 - terminated) * q_next                         # no bootstrap past a fall
    d = q_sa - td_target
    return (d.abs() < 1).where(0.5 * d * d, d.abs() - 0.5).mean()                   # Huber

  def train_step(self, sched: Tensor) -> Tensor:
    loss = self.td_loss(self.memory.sample(self.a.batch, sched[1:2]))
    gradient_step(loss, self.params, self.opt, self.a.clip_grad)
    return loss.realize()

  def iterate(self, sched: Tensor, ptr, slot):
    """The loop body, one TinyJit'd call: act, step, store, then --grad-steps gradient steps."""
    self.collect(sched, ptr, slot)
    for _ in range(self.a.grad_steps): loss = self.train_step(sched)
    self.loss_log[slot:slot + 1].assign(loss.reshape(1)).realize()

  def set_lr(self, env_steps: int, budget: int):
    """Linear decay from --lr to --lr-end over the budget: big steps early, small ones once Q is
    nearly right, so a good policy is not trained away again (DQN on CartPole otherwise oscillates)."""
    frac = min(env_steps / budget, 1.0)
    self.opt.lr.assign(Tensor([self.a.lr + frac * (self.a.lr_end - self.a.lr)], device=self.opt.lr.device)).realize()

  def epsilon(self, env_steps: int) -> float:
    frac = min(env_steps / self.a.eps_steps, 1.0)
    return self.a.eps_start + frac * (self.a.eps_end - self.a.eps_start)

  def train(self, evaluate, budget: int, eval_every: int):
    """Run until solved or `budget` env steps. -> history dict."""
    a, mem, n = self.a, self.memory, self.a.dqn_envs
    hist = {"returns": [], "losses": [], "evals": [], "env_steps": 0, "grad_steps": 0, "solved_at": None}
    slot, next_eval = 0, eval_every
    def read_log():
      lengths = self.return_log.numpy()[:slot]
      hist["returns"] += [float(v) for v in lengths.flatten() if v > 0]
      if hist["grad_steps"]: hist["losses"] += self.loss_log.numpy()[:slot][-min(slot, hist["grad_steps"]):].tolist()
    bar = common.progress(total=budget, desc="DQN")
    while hist["env_steps"] < budget:
      sched = Tensor([self.epsilon(hist["env_steps"]), float(max(mem.size, 1))]).realize()
      ptr, sl = mem.ptr_var.bind(mem.pos), self.slot_var.bind(slot)
      if hist["env_steps"] < a.learning_starts: self.collect_jit(sched, ptr, sl)
      else:
        if slot == 0: self.set_lr(hist["env_steps"], budget)
        self.iterate_jit(sched, ptr, sl)
        before, hist["grad_steps"] = hist["grad_steps"], hist["grad_steps"] + a.grad_steps
        for _ in range(hist["grad_steps"] // a.target_every - before // a.target_every): self.target_jit()
      mem.advance()
      hist["env_steps"] += n
      slot += 1
      bar.update(n)
      if slot == self.LOG or hist["env_steps"] >= next_eval or hist["env_steps"] >= budget:
        read_log()
        slot = 0
        recent = np.mean(hist["returns"][-20:]) if hist["returns"] else 0.0
        bar.set_description(f"DQN return(20) {recent:5.1f} ε {self.epsilon(hist['env_steps']):.2f}")
      if hist["env_steps"] >= next_eval:
        next_eval += eval_every
        mean_return = float(evaluate().mean())
        hist["evals"].append((hist["env_steps"], len(hist["returns"]), mean_return))
        log_eval("DQN", hist, mean_return)
        if mean_return >= a.target_return:
          hist["solved_at"] = hist["env_steps"]
          break
    bar.update(close=True)
    return hist

  def state_dict(self) -> dict: return get_state_dict(self.q_net)
  def load(self, sd: dict):
    load_state_dict(self.q_net, sd, verbose=False)
    self.update_target(tau=1.0)


# ---- REINFORCE ---------------------------------------------------------------------------------

class Reinforce:
  def __init__(self, a):
    self.a, n = a, a.pg_batch
    self.trunk = [nn.Linear(OBS_DIM, a.hidden), Tensor.relu]
    self.policy_head = nn.Linear(a.hidden, N_ACTIONS)
    self.value_head = nn.Linear(a.hidden, 1) if a.baseline else None
    self.params = realized(get_parameters([self.trunk, self.policy_head, self.value_head]))
    self.opt = nn.optim.Adam(self.params, lr=a.pg_lr)
    self.env = BatchedCartPole(n)
    self.obs_buf = Tensor.zeros(MAX_STEPS, n, OBS_DIM).contiguous().realize()   # (T, N, 4)
    self.action_buf = Tensor.zeros(MAX_STEPS, n).contiguous().realize()         # (T, N)
    self.mask_buf = Tensor.zeros(MAX_STEPS, n).contiguous().realize()           # 1 while the episode lasts
    self.alive = Tensor.ones(n).contiguous().realize()
    t, k = np.arange(MAX_STEPS)[:, None], np.arange(MAX_STEPS)[None, :]
    self.discount = Tensor(np.where(k >= t, a.gamma ** np.maximum(k - t, 0), 0.0).astype(np.float32))   # Γ, (T, T)
    self.t_var = Variable("t", 0, MAX_STEPS - 1)
    self.rollout_jit, self.update_jit = TinyJit(self.rollout_step), TinyJit(self.update)

  def logits(self, obs: Tensor) -> Tensor: return self.policy_head(obs.sequential(self.trunk))   # (B, 4) -> (B, 2)

  def rollout_step(self, t):
    """Sample a ~ π(·|s) for every env, record (s, a, alive) at time t, step."""
    s = self.env.obs
    a = Tensor.rand(self.a.pg_batch) < self.logits(s).softmax(-1)[:, 1]
    Tensor.realize(self.obs_buf[t:t + 1].assign(s.unsqueeze(0)), self.action_buf[t:t + 1].assign(a.float().unsqueeze(0)),
                   self.mask_buf[t:t + 1].assign(self.alive.unsqueeze(0)))
    _, _, terminated, truncated, _ = self.env.step(a)
    Tensor.realize(self.env.state, self.env.steps, self.alive.assign(self.alive * (terminated | truncated).logical_not().float()))

  def discounted_returns(self, rewards: Tensor) -> Tensor:
    """G_t = Σ_k≥t γ^(k−t) r_k for every t and episode at once: G = Γ·r, (T, T) @ (T, N) -> (T, N)."""
    return self.discount @ rewards

  def update(self) -> Tensor:
    mask = self.mask_buf                                                    # (T, N); r_t = 1 while alive
    returns = self.discounted_returns(mask)
    count = mask.sum()
    mean = (returns * mask).sum() / count
    std = (((returns - mean) ** 2 * mask).sum() / count).sqrt()
    g_hat = ((returns - mean) / (std + 1e-8)).detach()
    hidden = self.obs_buf.sequential(self.trunk)                            # (T, N, H)
    log_probs = self.policy_head(hidden).log_softmax(-1)                    # (T, N, 2)
    log_pi_a = (log_probs * self.action_buf.cast(dtypes.int32).one_hot(N_ACTIONS)).sum(-1)
    advantage = g_hat
    loss = Tensor(0.0)
    if self.value_head is not None:
      value = self.value_head(hidden).squeeze(-1)                           # V(s), (T, N)
      advantage = g_hat - value.detach()
      loss = 0.5 * (((value - g_hat) ** 2) * mask).sum() / count
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    loss = loss - (log_pi_a * advantage * mask).sum() / count - self.a.entropy * (entropy * mask).sum() / count
    gradient_step(loss, self.params, self.opt, 0.0)
    return loss.realize()

  def run_episodes(self) -> np.ndarray:
    """--pg-batch episodes in parallel from fresh starts, stopping once all have ended. -> lengths."""
    self.env.reset()
    Tensor.realize(self.alive.assign(Tensor.ones(self.a.pg_batch)), self.mask_buf.assign(Tensor.zeros(MAX_STEPS, self.a.pg_batch)))
    for t in range(MAX_STEPS):
      self.rollout_jit(self.t_var.bind(t))
      if t % 25 == 24 and self.alive.sum().item() == 0: break               # one host sync every 25 steps
    return self.mask_buf.sum(0).numpy()

  def train(self, evaluate, budget: int, eval_every: int):
    hist = {"returns": [], "losses": [], "evals": [], "env_steps": 0, "solved_at": None}
    next_eval = eval_every
    bar = common.progress(total=budget, desc="REINFORCE")
    while len(hist["returns"]) < budget:
      lengths = self.run_episodes()
      hist["losses"].append(self.update_jit().item())
      hist["returns"] += lengths.tolist()
      hist["env_steps"] += int(lengths.sum())
      bar.update(len(lengths))
      bar.set_description(f"REINFORCE return(20) {np.mean(hist['returns'][-20:]):5.1f}")
      if len(hist["returns"]) >= next_eval:
        next_eval += eval_every
        mean_return = float(evaluate().mean())
        hist["evals"].append((hist["env_steps"], len(hist["returns"]), mean_return))
        log_eval("REINFORCE", hist, mean_return)
        if mean_return >= self.a.target_return:
          hist["solved_at"] = len(hist["returns"])
          break
    bar.update(close=True)
    return hist

  def state_dict(self) -> dict:
    return get_state_dict({"trunk": self.trunk, "policy": self.policy_head, **({"value": self.value_head} if self.value_head else {})})
  def load(self, sd: dict):
    load_state_dict({"trunk": self.trunk, "policy": self.policy_head, **({"value": self.value_head} if self.value_head else {})}, sd, verbose=False)
  def q_values(self, obs: Tensor) -> Tensor: return self.logits(obs)     # argmax of logits = the greedy action


# ---- evaluation: greedy episodes in parallel, and one episode on the numpy env ---------------------

class GreedyEvaluator:
  """`episodes` greedy episodes at once on a BatchedCartPole; returns their lengths (= returns)."""
  def __init__(self, scores, episodes: int):
    self.scores, self.n = scores, episodes
    self.env = BatchedCartPole(episodes)
    self.returns = Tensor.zeros(episodes).contiguous().realize()
    self.alive = Tensor.ones(episodes).contiguous().realize()
    self.step_jit = TinyJit(self.step)

  def step(self):
    _, _, terminated, truncated, _ = self.env.step(self.scores(self.env.obs).argmax(-1))
    Tensor.realize(self.returns.assign(self.returns + self.alive), self.alive.assign(self.alive * (terminated | truncated).logical_not().float()))
    Tensor.realize(self.env.state, self.env.steps)

  def __call__(self) -> np.ndarray:
    self.env.reset()
    Tensor.realize(self.returns.assign(Tensor.zeros(self.n)), self.alive.assign(Tensor.ones(self.n)))
    for t in range(MAX_STEPS):
      self.step_jit()
      if t % 50 == 49 and self.alive.sum().item() == 0: break
    return self.returns.numpy()


def play_numpy_episode(scores, rng: np.random.Generator) -> tuple[int, float]:
  """One greedy episode on the float64 numpy env, the network queried per step. -> (return, ms per action)."""
  act = TinyJit(lambda obs: scores(obs).argmax(-1).realize())
  env, total, t0 = CartPole(rng), 0, time.perf_counter()
  obs, done = env.reset(), False
  while not done:
    obs, reward, terminated, truncated = env.step(int(act(Tensor(obs[None])).item()))
    total, done = total + reward, terminated or truncated
  return int(total), (time.perf_counter() - t0) * 1e3 / max(total, 1)


def plot_history(hist: dict, name: str, x_loss: str, dest: Path):
  fig, (ax_r, ax_l) = figure(1, 2, size=(10, 3.8))
  returns = np.asarray(hist["returns"])
  ax_r.plot(returns, lw=0.8, alpha=0.35, label="episode return")
  ax_r.plot(moving_average(returns, 20), lw=2, label="20-episode mean")
  if hist["evals"]:
    ax_r.plot([e[1] for e in hist["evals"]], [e[2] for e in hist["evals"]], "o", color="k", label="greedy eval (mean)")
  ax_r.axhline(SOLVED_RETURN, ls="--", color="gray", lw=1, label="solved (475)")
  ax_r.set(title=f"{name}: return per training episode", xlabel="episode", ylabel="return")
  ax_l.plot(hist["losses"], lw=0.6)
  if len(hist["losses"]) > 50: ax_l.plot(moving_average(hist["losses"], 50), lw=2)
  ax_l.set(title=f"{name}: loss", xlabel=x_loss, ylabel="loss")
  for ax in (ax_r, ax_l): ax.grid(alpha=0.3)
  ax_r.legend(fontsize=7)
  save_figure(fig, dest)


# ---- the command line --------------------------------------------------------------------------

def parse_args(argv=None):
  p = common.project_parser(PROJECT, __doc__)
  p.add_argument("--agent", choices=["dqn", "reinforce", "both"], default="both", help="which agent(s) to train")
  p.add_argument("--hidden", type=cli.positive_int, default=128, help="hidden width (DQN: 4-H-H-2, policy: 4-H-2)")
  p.add_argument("--gamma", type=cli.probability, default=0.99, help="discount γ")
  p.add_argument("--eval-episodes", type=cli.positive_int, default=100, help="greedy episodes per evaluation")
  p.add_argument("--target-return", type=cli.positive_float, default=SOLVED_RETURN, help="mean greedy return that counts as solved")
  d = p.add_argument_group("DQN")
  d.add_argument("--dqn-steps", type=cli.positive_int, default=100_000, help="budget of environment steps")
  d.add_argument("--dqn-envs", type=cli.positive_int, default=4, help="environments stepped per iteration (one gradient step each)")
  d.add_argument("--batch", type=cli.positive_int, default=128, help="minibatch size B")
  d.add_argument("--grad-steps", type=cli.positive_int, default=2, help="gradient steps per iteration (replay ratio = grad-steps / dqn-envs)")
  d.add_argument("--lr", type=cli.positive_float, default=1e-3, help="Adam learning rate for Q at the start")
  d.add_argument("--lr-end", type=cli.positive_float, default=1e-4, help="learning rate reached (linearly) at the end of the budget")
  d.add_argument("--buffer", type=cli.positive_int, default=50_000, help="replay capacity (transitions)")
  d.add_argument("--learning-starts", type=int, default=1000, help="env steps of pure collection before training")
  d.add_argument("--eps-start", type=cli.probability, default=1.0, help="initial ε")
  d.add_argument("--eps-end", type=cli.probability, default=0.05, help="final ε")
  d.add_argument("--eps-steps", type=cli.positive_int, default=10_000, help="env steps over which ε decays linearly")
  d.add_argument("--target-every", type=cli.positive_int, default=250, help="gradient steps between target updates")
  d.add_argument("--tau", type=cli.probability, default=1.0, help="target update θ⁻ ← τθ + (1−τ)θ⁻ (1: hard copy)")
  d.add_argument("--double", action=argparse.BooleanOptionalAction, default=True, help="double DQN: online net picks a', target net values it")
  d.add_argument("--clip-grad", type=cli.nonnegative_float, default=10.0, help="clip gradients to this global norm (0: off)")
  d.add_argument("--eval-every", type=cli.positive_int, default=2500, help="env steps between greedy evaluations")
  r = p.add_argument_group("REINFORCE")
  r.add_argument("--pg-episodes", type=cli.positive_int, default=2000, help="budget of training episodes")
  r.add_argument("--pg-batch", type=cli.positive_int, default=4, help="episodes per update (run in parallel)")
  r.add_argument("--pg-lr", type=cli.positive_float, default=1e-2, help="Adam learning rate for the policy")
  r.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True, help="learned value baseline b(s)")
  r.add_argument("--entropy", type=cli.nonnegative_float, default=0.0, help="entropy bonus β")
  r.add_argument("--pg-eval-every", type=cli.positive_int, default=100, help="training episodes between greedy evaluations")
  a = p.parse_args(argv)
  if a.json and not a.bench: p.error("--json writes benchmark results: use it with --bench")
  if a.eps_end > a.eps_start: p.error(f"--eps-end {a.eps_end} is above --eps-start {a.eps_start}")
  if a.buffer % a.dqn_envs: p.error(f"--buffer {a.buffer} must be a multiple of --dqn-envs {a.dqn_envs} (the ring is written N rows at a time)")
  if a.buffer < a.batch: p.error(f"--buffer {a.buffer} is smaller than --batch {a.batch}")
  if a.learning_starts < a.batch: p.error(f"--learning-starts {a.learning_starts} must be at least --batch {a.batch}")
  if a.load and a.save: p.error("--load evaluates a saved agent; --save with it would only copy the file")
  if a.quick:
    a.dqn_steps, a.pg_episodes, a.eval_episodes = min(a.dqn_steps, 10_000), min(a.pg_episodes, 300), min(a.eval_episodes, 20)
    a.eval_every, a.pg_eval_every, a.target_return = min(a.eval_every, 2500), min(a.pg_eval_every, 100), min(a.target_return, 100.0)
  return a


def agents_of(a) -> list[str]: return ["dqn", "reinforce"] if a.agent == "both" else [a.agent]


def build(name: str, a): return DQN(a) if name == "dqn" else Reinforce(a)


def load_agents(a) -> dict:
  tensors, meta = load_checkpoint(a.load)
  if "hidden" in meta: a.hidden = int(meta["hidden"])
  if "baseline" in meta: a.baseline = bool(meta["baseline"])
  agents = {}
  for name in agents_of(a):
    part = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
    if not part: raise UserError(f"checkpoint {a.load} holds no {name} agent (it has: {', '.join(sorted({k.split('.')[0] for k in tensors}))})")
    agent = build(name, a)
    check_state_matches(agent.state_dict(), part, f"checkpoint {a.load} ({name})")
    agent.load(part)
    agents[name] = agent
  return agents


def main(a) -> int:
  rng = common.seed_all(a.seed)
  common.device.open_device()
  if a.bench: return run_bench(a)
  summary, ok = {"seed": a.seed, "quick": a.quick, "agents": {}}, True
  agents = load_agents(a) if a.load else {}
  out = out_dir(a.out)
  for name in agents_of(a):
    print(f"\n== {name.upper()} ==")
    t0, cpu0 = time.perf_counter(), time.process_time()
    agent = agents.get(name) or build(name, a)
    evaluate = GreedyEvaluator(agent.q_values, a.eval_episodes)
    hist = None
    if not a.load:
      hist = (agent.train(evaluate, a.dqn_steps, a.eval_every) if name == "dqn" else
              agent.train(evaluate, a.pg_episodes, a.pg_eval_every))
      plot_history(hist, name.upper(), "gradient step" if name == "dqn" else "update", out / f"{name}_curve.png")
    # wall time, and this process's CPU time: on a shared machine the second is what an idle one would take
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    final = evaluate()                                   # fresh episodes, not the ones that stopped training
    played, act_ms = play_numpy_episode(agent.q_values, rng)
    rec = {"train_wall_s": train_s, "train_cpu_s": train_cpu_s, "eval_mean": float(final.mean()), "eval_std": float(final.std()), "eval_min": float(final.min()),
           "numpy_env_return": played, "numpy_env_ms_per_action": act_ms}
    if hist:
      rec.update(env_steps=hist["env_steps"], episodes=len(hist["returns"]), solved_at=hist["solved_at"],
                 evals=hist["evals"], grad_steps=hist.get("grad_steps", len(hist["losses"])))
      unit = "env steps" if name == "dqn" else "episodes"
      print(f"{name}: {'stopped' if hist['solved_at'] else 'budget spent'} after {hist['env_steps']} env steps, "
            f"{len(hist['returns'])} episodes, {train_s:.1f} s wall ({train_cpu_s:.1f} s CPU)" + (f" (solved at {hist['solved_at']} {unit})" if hist["solved_at"] else ""))
    print(f"{name}: greedy return over {a.eval_episodes} fresh episodes {final.mean():.1f} ± {final.std():.1f} (min {final.min():.0f}); "
          f"one numpy-env episode: {played} ({act_ms:.2f} ms per action)")
    ok &= common.check(f"{name} mean greedy return", float(final.mean()), a.target_return)
    summary["agents"][name] = rec
    agents[name] = agent
  if a.save:
    state = {f"{n}.{k}": v for n, ag in agents.items() for k, v in ag.state_dict().items()}
    save_checkpoint(state, a.save, {"hidden": a.hidden, "baseline": a.baseline, "agents": list(agents), "seed": a.seed})
    print(f"saved {', '.join(agents)} to {a.save}")
  save_json(summary, out / "summary.json")
  print(f"wrote {out}/summary.json" + ("" if a.load else " and the learning curves"))
  return 0 if ok else 1


# ---- --bench -----------------------------------------------------------------------------------

def run_bench(a) -> int:
  from common.bench import Bench
  bench, quick = Bench(PROJECT), a.quick
  rng = np.random.default_rng(a.seed)

  env, steps = CartPole(rng), 200 if quick else 2000
  env.reset()
  def python_env():
    for _ in range(steps):
      _, _, term, trunc = env.step(int(rng.integers(2)))
      if term or trunc: env.reset()
  bench.run("python env step (numpy, 1 env)", python_env, rate=(steps, "env-steps/s"), warmup=1, iters=5 if quick else 20)

  for n in ([1, 64] if quick else [1, 64, 1024, 8192]):
    benv = BatchedCartPole(n)
    def batched_step(benv=benv):
      benv.step(Tensor.rand(benv.n) < 0.5)
      Tensor.realize(benv.state, benv.steps)
    bench.run(f"batched env step N={n}", TinyJit(batched_step), rate=(n, "env-steps/s"), iters=20 if quick else 200)

  dqn = DQN(a)
  act = TinyJit(lambda obs: dqn.q_values(obs).argmax(-1).realize())
  obs = env.reset()
  bench.run("action selection (host obs -> action)", lambda: int(act(Tensor(obs[None])).item()), iters=50 if quick else 1000)

  # a replay ring full of real transitions, then the gradient step alone at several batch sizes
  sched = Tensor([1.0, float(a.buffer)]).realize()
  for i in range(0, min(a.buffer, 4000), a.dqn_envs):
    dqn.collect_jit(sched, dqn.memory.ptr_var.bind(i), dqn.slot_var.bind(0))
  default_batch = a.batch
  for b in ([32, 128] if quick else [32, 128, 512]):
    a.batch = b          # read when the step is traced, so each size gets its own JIT
    step = TinyJit(dqn.train_step)
    bench.run(f"dqn train step B={b} (sample, TD target, Huber, Adam)", lambda: step(sched), iters=20 if quick else 200)
  a.batch = default_batch
  bench.run(f"dqn iteration N={a.dqn_envs} B={a.batch} (act+step+store+{a.grad_steps} train steps)",
            lambda: dqn.iterate_jit(sched, dqn.memory.ptr_var.bind(0), dqn.slot_var.bind(0)), iters=20 if quick else 200)

  # the anchor workload: a 4-128-128-2 MLP, Adam, batch 128 (compare with torch_reference.py)
  net = mlp([OBS_DIM, 128, 128, N_ACTIONS])
  params = get_parameters(net)
  opt = nn.optim.Adam(params, lr=1e-3)
  x, y = Tensor.randn(128, OBS_DIM).realize(), Tensor.randn(128, N_ACTIONS).realize()
  @TinyJit
  def mlp_step():
    loss = ((x.sequential(net) - y) ** 2).mean()
    gradient_step(loss, params, opt, 0.0)
    return loss.realize()
  bench.run("mlp 4-128-128-2 Adam step B=128", mlp_step, iters=20 if quick else 200)

  # end to end: time to solve (quick: the --quick budget, which does not solve)
  for name in agents_of(a):
    agent = build(name, a)
    evaluate = GreedyEvaluator(agent.q_values, a.eval_episodes)
    holder = {}
    def solve(agent=agent, evaluate=evaluate, name=name):
      holder["hist"] = (agent.train(evaluate, a.dqn_steps, a.eval_every) if name == "dqn" else
                        agent.train(evaluate, a.pg_episodes, a.pg_eval_every))
    timing = common.bench.time_fn(solve, warmup=0, iters=1)
    h = holder["hist"]
    bench.add(f"{name} train to solve{' (quick budget)' if quick else ''}", timing, env_steps=h["env_steps"],
              episodes=len(h["returns"]), solved_at=h["solved_at"], last_eval=h["evals"][-1][2] if h["evals"] else None)
  bench.print(f"{PROJECT} --bench")
  for r in bench.records:
    if "env_steps" in r: print(f"{r['case']}: {r['median_ms'] / 1e3:.1f} s, {r['env_steps']} env steps, {r['episodes']} episodes, solved at {r['solved_at']}")
  bench.write_json(a.json)
  return 0


if __name__ == "__main__":
  args = parse_args()
  sys.exit(common.run_main(lambda: main(args)))
