#!/usr/bin/env python3
"""CartPole solved twice in tinygrad: DQN (value-based) and REINFORCE (policy gradient), with the
environment itself running as tensors on the device.

THE PROBLEM. CartPole-v1 (Gymnasium's exact dynamics): a pole hinged on a cart; each step the agent
pushes the cart left or right with 10 N and gets +1 while the pole stays within ±12° and the cart
within ±2.4 m. An episode ends by *termination* (the pole fell: no future reward) or by *truncation*
at 500 steps (a time limit: the state still has a future, we just stopped looking). Solved = mean
return ≥ 475 over 100 greedy episodes.

THE ENVIRONMENT is cartpole.py (its docstring has the equations): `CartPole`, Gymnasium's dynamics in
numpy, and `BatchedCartPole`, N environments stepped at once as a (N, 4) tinygrad tensor that resets
finished ones in the same call, so act → step → store runs on the device inside one TinyJit'd function.

DQN (Mnih et al. 2015; hyperparameters in `DQNConfig`). A network Q_θ: (B, 4) → (B, 2) estimates the
return of each action. Acting is ε-greedy (ε decays linearly from --eps-start to --eps-end over
--eps-steps env steps). Transitions (s, a, r, terminated, s') go to a preallocated ring buffer on the
device (--buffer rows of 11 floats). Each iteration steps --dqn-envs environments once and then takes
--grad-steps gradient steps, each on a fresh minibatch of B = --batch rows, so the replay ratio is
grad-steps / dqn-envs gradient steps per env step (2 / 4 = 0.5 with the defaults):
    y      = r + γ·(1 − terminated)·max_a' Q_θ⁻(s', a')           with --no-double (vanilla DQN)
    y      = r + γ·(1 − terminated)·Q_θ⁻(s', argmax_a' Q_θ(s', a'))   double DQN, the default
    L(θ)   = mean Huber(Q_θ(s, a) − y),  Huber(d) = ½d² if |d| < 1 else |d| − ½
y is the TD target: a truncated episode still bootstraps, only a fall does not. Double DQN lets the
online net pick a' and the target net value it, which removes the max operator's upward bias.
θ⁻ is a target network: every --target-every gradient steps θ⁻ ← τθ + (1 − τ)θ⁻ (τ = 1: hard copy).
Gradients are clipped to global norm --clip-grad; Adam takes the step, with a learning rate that decays
linearly from --lr to --lr-end over --dqn-steps env steps (large steps while Q is far off, small ones
once a good policy has to be kept rather than found). `DQN.td_loss` and `DQN.update` are the update.

REINFORCE (Williams 1992; `ReinforceConfig`). A softmax policy π_θ(a|s) = softmax(f_θ(s)). --pg-batch
episodes run in parallel to the end; with r_t = 1 while the episode lasts, the discounted returns of
all steps are one matmul with a (T, T) discount matrix Γ[t, k] = γ^(k−t) for k ≥ t: G = Γ·r (T = 500,
shapes (T, N)). Returns are normalized over the batch, Ĝ = (G − mean)/std, and
    L(θ) = −mean_t[ log π_θ(a_t|s_t)·(Ĝ_t − b(s_t)) ] − β·mean_t H(π_θ(·|s_t)) + ½·mean_t (V(s_t) − Ĝ_t)²
where b = V is an optional learned baseline (a value head on the shared hidden layer, --baseline) and
β = --entropy. ∇θ L is the policy-gradient estimate (the baseline lowers its variance, not its mean).

BUDGETS. --episodes N bounds each agent's training: REINFORCE trains on N episodes (rounded up to whole
--pg-batch batches); DQN stops in the iteration in which its N-th episode ends, or at --dqn-steps env
steps if that comes first. Every --eval-every env steps (DQN) or --pg-eval-every episodes (REINFORCE),
--eval-episodes greedy episodes (argmax) run in parallel; training stops when their mean reaches
--target-return. Then fresh greedy episodes decide PASS/FAIL, and one episode is replayed on the numpy env.

RUN IT.
    NV=1 python3 reinforcement-learning/rl_agents.py --agent dqn --episodes 500    # Jetson Orin (NV backend)
    NV=1 python3 reinforcement-learning/rl_agents.py --agent reinforce --episodes 500
    NV=1 python3 reinforcement-learning/rl_agents.py --bench            # --json PATH: the records as JSON
    JITBEAM=2 NV=1 python3 reinforcement-learning/rl_agents.py --bench --cases steps   # BEAM on the train steps alone
    python3 reinforcement-learning/rl_agents.py --save out/agents.safetensors   # both agents on a CPU; --load evaluates
Outputs under --out (default out/reinforcement-learning/): <agent>_curve.png (returns, evaluations, loss)
and summary.json; --json writes the timing records (common.bench schema) of whatever ran. --quick:
10 000 DQN env steps, 300 episodes, 20 evaluation episodes, and the bar "learns measurably": greedy mean
return ≥ 100 for each agent (untrained greedy ≈ 10, random ≈ 22). Flags you type win over --quick.

EXPECTED RESULTS (defaults, `--agent dqn|reinforce --seed S`, DEV=CPU; times in README.md). DQN solved
seeds 0–4 at 57 500, 55 000, 70 000, 65 000 and 62 500 env steps, each with a fresh greedy mean of 500.0
(defaults chosen on seeds 0–2; 3 and 4 held out); REINFORCE solved seeds 0, 1, 2 after 200, 200, 300
episodes. DQN's evaluations swing by hundreds between checks, hence the stop at the first passing one
and a fresh evaluation for PASS/FAIL. On a Jetson Orin the runs are expected (not measured) to be
bound by kernel-launch latency: the networks are tiny.
"""
import common   # first: turns NV=1 / CUDA=1 / CPU=1 into DEV=... before tinygrad reads it
import argparse, dataclasses, math, os, sys, time
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
from tinygrad import Tensor, TinyJit, Variable, nn, dtypes
from tinygrad.helpers import Context
from tinygrad.nn.state import get_state_dict, get_parameters, load_state_dict
from common import UserError, cli
from common.bench import Bench, Timing
from common.files import save_json, save_checkpoint, load_checkpoint, check_state_matches
from common.train import realize_init
from cartpole import CartPole, BatchedCartPole, GreedyEvaluator, play_numpy_episode, MAX_STEPS, SOLVED_RETURN, OBS_DIM, N_ACTIONS

PROJECT, SCRIPT = "reinforcement-learning", "reinforcement-learning/rl_agents.py"

MAX_GRAD_STEPS = 64      # the gradient steps of one iteration are unrolled into one JIT'd graph

# ---- hyperparameters: one dataclass per agent; each field is also a flag (--name, or the one given) ----

def option(default, kind, help_text: str, flag: str | None = None):
  return field(default=default, metadata={"type": kind, "help": help_text, "flag": flag})

@dataclass(frozen=True)
class AgentConfig:
  """What both agents have (one flag each)."""
  hidden: int = option(128, cli.positive_int, "hidden width (DQN: 4-H-H-2, policy: 4-H-2)")
  gamma: float = option(0.99, cli.probability, "discount γ")
  episodes: int = option(2000, cli.positive_int, "training budget in episodes, for each agent (DQN also stops at --dqn-steps, REINFORCE "
                         "rounds up to whole --pg-batch batches)")
  eval_episodes: int = option(100, cli.positive_int, "greedy episodes per evaluation")
  target_return: float = option(SOLVED_RETURN, cli.float_range(1, MAX_STEPS), "mean greedy return that counts as solved")

@dataclass(frozen=True)
class DQNConfig(AgentConfig):
  steps: int = option(100_000, cli.positive_int, "budget of environment steps (the learning rate decays over it)", "--dqn-steps")
  envs: int = option(4, cli.positive_int, "environments stepped once per iteration (replay ratio = grad-steps / dqn-envs)", "--dqn-envs")
  grad_steps: int = option(2, cli.positive_int, f"gradient steps per iteration, at most {MAX_GRAD_STEPS}")
  batch: int = option(128, cli.positive_int, "minibatch size B")
  lr: float = option(1e-3, cli.positive_float, "Adam learning rate for Q at the start")
  lr_end: float = option(1e-4, cli.positive_float, "learning rate reached (linearly) at --dqn-steps")
  buffer: int = option(50_000, cli.positive_int, "replay capacity (transitions), a multiple of --dqn-envs")
  learning_starts: int = option(1000, cli.nonnegative_int, "env steps of pure collection before training")
  eps_start: float = option(1.0, cli.probability, "initial ε")
  eps_end: float = option(0.05, cli.probability, "final ε")
  eps_steps: int = option(10_000, cli.positive_int, "env steps over which ε decays linearly")
  target_every: int = option(250, cli.positive_int, "gradient steps between target updates")
  tau: float = option(1.0, cli.float_range(1e-6, 1), "target update θ⁻ ← τθ + (1−τ)θ⁻ (1: hard copy)")
  double: bool = option(True, bool, "double DQN: online net picks a', target net values it")
  clip_grad: float = option(10.0, cli.nonnegative_float, "clip gradients to this global norm (0: off)")
  eval_every: int = option(2500, cli.positive_int, "env steps between greedy evaluations")

@dataclass(frozen=True)
class ReinforceConfig(AgentConfig):
  batch: int = option(4, cli.positive_int, "episodes per update (run in parallel)", "--pg-batch")
  lr: float = option(1e-2, cli.positive_float, "Adam learning rate for the policy", "--pg-lr")
  baseline: bool = option(True, bool, "learned value baseline b(s) = V(s)")
  entropy: float = option(0.0, cli.nonnegative_float, "entropy bonus β")
  eval_every: int = option(100, cli.positive_int, "training episodes between greedy evaluations", "--pg-eval-every")

# ---- the math shared by both agents ------------------------------------------------------------

def mlp(sizes: list[int]) -> list:
  """[4, 128, 128, 2] -> Linear, relu, Linear, relu, Linear (PyTorch-style uniform init)."""
  layers: list = []
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers += [nn.Linear(fan_in, fan_out)] + ([Tensor.relu] if i < len(sizes) - 2 else [])
  return layers

def huber(d: Tensor) -> Tensor:
  """½d² for |d| < 1, |d| − ½ beyond: quadratic near the target, linear (bounded gradient) far away."""
  return (d.abs() < 1).where(0.5 * d * d, d.abs() - 0.5)

def gradient_step(loss: Tensor, params: list[Tensor], opt: nn.optim.Optimizer, clip_norm: float) -> None:
  """∇θ L for exactly these parameters (not the replay ring or the target net), clipped to global
  norm `clip_norm` when it is > 0, then one optimizer step."""
  grads = loss.gradient(*params)
  if clip_norm > 0:
    norm = sum((g * g).sum() for g in grads).sqrt()
    scale = (clip_norm / (norm + 1e-6)).minimum(1.0)
    grads = [g * scale for g in grads]
  for p, g in zip(params, grads): p.grad = g
  with Context(TRAINING=1): opt.step()

def linear_schedule(start: float, end: float, fraction: float) -> float:
  return start + min(fraction, 1.0) * (end - start)

@dataclass
class History:
  """What a training run did, for the plot, the log and summary.json."""
  returns: list[float] = field(default_factory=list)     # return of each finished training episode
  losses: list[float] = field(default_factory=list)
  evals: list[tuple[int, int, float]] = field(default_factory=list)   # (env steps, episodes, greedy mean)
  env_steps: int = 0
  grad_steps: int = 0
  solved_at: int | None = None   # env steps (DQN) or episodes (REINFORCE) at the passing evaluation
  stopped: str = ""              # "solved", "env-step budget" or "episode budget"

def evaluate_during_training(name: str, hist: History, evaluate, target: float, solved_at: int) -> None:
  """A greedy evaluation; it stops training when its mean reaches `target`."""
  mean_return = float(evaluate().mean())
  hist.evals.append((hist.env_steps, len(hist.returns), mean_return))
  recent = np.mean(hist.returns[-20:]) if hist.returns else 0.0
  common.log(f"{name}: {hist.env_steps:>7} env steps, {len(hist.returns):>5} episodes | "
             f"training return (last 20) {recent:6.1f} | greedy eval {mean_return:6.1f}")
  if mean_return >= target: hist.solved_at, hist.stopped = solved_at, "solved"

def check_finite(name: str, losses: list[float], hist: History, lr_flag: str) -> None:
  bad = [v for v in losses if not math.isfinite(v)]
  if bad: raise UserError(f"{name} diverged: the loss became {bad[0]} after {hist.env_steps} env steps; try a smaller {lr_flag}")

# ---- DQN -----------------------------------------------------------------------------------------

class ReplayMemory:
  """Preallocated ring of transitions on the device, one row of 11 floats each:
  s (4) | a | r | terminated | s' (4). Writes go to rows [ptr, ptr + N) with ptr a bound Variable,
  so the same compiled kernels serve every position."""
  S, A, R, TERM, S2 = slice(0, 4), 4, 5, 6, slice(7, 11)

  def __init__(self, capacity: int, n_envs: int):
    self.capacity, self.n_envs = capacity, n_envs
    self.table = Tensor.zeros(capacity, 11).contiguous().realize()
    self.ptr_var = Variable("replay_ptr", 0, capacity - n_envs)
    self.pos, self.size = 0, 0     # host-side: next write position, number of valid rows

  def store(self, ptr, obs, action, reward, terminated, next_obs) -> Tensor:
    rows = Tensor.cat(obs, action.float().unsqueeze(1), reward.unsqueeze(1), terminated.float().unsqueeze(1), next_obs, dim=1)
    return self.table[ptr:ptr + self.n_envs].assign(rows)

  def advance(self):
    self.pos = (self.pos + self.n_envs) % self.capacity
    self.size = min(self.size + self.n_envs, self.capacity)

  def sample(self, batch: int, filled: Tensor):
    """Uniform minibatch of `batch` rows from the first `filled` (a (1,) tensor, so the kernel never changes)."""
    return self.unpack(self.table[(Tensor.rand(batch) * filled).cast(dtypes.int32)])   # a gather

  @classmethod
  def unpack(cls, rows: Tensor):
    """(B, 11) -> s (B, 4), a (B,) int, r (B,), terminated (B,) as 0/1, s' (B, 4)"""
    return rows[:, cls.S], rows[:, cls.A].cast(dtypes.int32), rows[:, cls.R], rows[:, cls.TERM], rows[:, cls.S2]

class DQN:
  LOG = 250     # iterations between reads of the on-device logs (one host sync per read)

  def __init__(self, cfg: DQNConfig):
    self.cfg = cfg
    self.q_net = mlp([OBS_DIM, cfg.hidden, cfg.hidden, N_ACTIONS])
    self.target_net = mlp([OBS_DIM, cfg.hidden, cfg.hidden, N_ACTIONS])
    self.params = get_parameters(self.q_net)
    realize_init(self.q_net)
    self.opt = nn.optim.Adam(self.params, lr=cfg.lr)
    self.update_target(tau=1.0)
    self.env = BatchedCartPole(cfg.envs)
    self.memory = ReplayMemory(cfg.buffer, cfg.envs)
    self.loss_log = Tensor.zeros(self.LOG).contiguous().realize()                  # last loss of each iteration
    self.episode_log = Tensor.zeros(self.LOG, cfg.envs).contiguous().realize()     # episode length at its end, else 0
    self.slot_var = Variable("log_slot", 0, self.LOG - 1)
    self.collect_jit, self.iterate_jit = TinyJit(self.collect), TinyJit(self.iterate)
    self.target_jit = TinyJit(lambda: self.update_target(cfg.tau))     # Polyak updates may run every step

  def q_values(self, obs: Tensor) -> Tensor: return obs.sequential(self.q_net)   # (B, 4) -> (B, 2)

  def act(self, obs: Tensor, eps: Tensor) -> Tensor:
    """ε-greedy: a random action with probability ε, else argmax_a Q(s, a). (N, 4) -> (N,) int."""
    n = obs.shape[0]
    explore = Tensor.rand(n) < eps
    return explore.where((Tensor.rand(n) < 0.5).cast(dtypes.int32), self.q_values(obs).argmax(-1))

  def collect(self, sched: Tensor, ptr: Variable, slot: Variable) -> None:
    """Step every environment once, ε-greedily, into the ring. sched = [ε, rows filled]."""
    obs = self.env.obs
    action = self.act(obs, sched[0])
    next_obs, reward, terminated, truncated, length = self.env.step(action)
    # the ring and the episode log read the old state: realize them before the env commits its new one
    Tensor.realize(self.memory.store(ptr, obs, action, reward, terminated, next_obs),
                   self.episode_log[slot:slot + 1].assign((terminated | truncated).where(length, 0).float().unsqueeze(0)))
    Tensor.realize(self.env.state, self.env.steps)

  # the update, top to bottom: minibatch -> TD target -> Huber loss -> clipped Adam step -> (in train) θ⁻
  def td_loss(self, obs: Tensor, action: Tensor, reward: Tensor, terminated: Tensor, next_obs: Tensor) -> Tensor:
    q_sa = (self.q_values(obs) * action.one_hot(N_ACTIONS)).sum(-1)                    # Q_θ(s, a), (B,)
    q_next_target = next_obs.sequential(self.target_net).detach()                       # Q_θ⁻(s', ·), (B, 2)
    if self.cfg.double:                                                                 # θ picks a', θ⁻ values it
      q_next = (q_next_target * self.q_values(next_obs).detach().argmax(-1).one_hot(N_ACTIONS)).sum(-1)
    else:
      q_next = q_next_target.max(-1)
    td_target = reward + self.cfg.gamma * (1 - terminated) * q_next                     # no bootstrap past a fall
    return huber(q_sa - td_target).mean()

  def update(self, filled: Tensor, batch: int) -> Tensor:
    loss = self.td_loss(*self.memory.sample(batch, filled))
    gradient_step(loss, self.params, self.opt, self.cfg.clip_grad)
    return loss.realize()

  def update_target(self, tau: float) -> None:
    """θ⁻ ← τθ + (1 − τ)θ⁻"""
    for t, o in zip(get_parameters(self.target_net), self.params): t.assign(tau * o.detach() + (1 - tau) * t)
    Tensor.realize(*get_parameters(self.target_net))

  def iterate(self, sched: Tensor, ptr: Variable, slot: Variable) -> None:
    """The loop body as one TinyJit'd call: collect, then `grad_steps` updates; the last loss is logged."""
    self.collect(sched, ptr, slot)
    for _ in range(self.cfg.grad_steps): loss = self.update(sched[1:2], self.cfg.batch)
    self.loss_log[slot:slot + 1].assign(loss.reshape(1)).realize()

  def set_lr(self, env_steps: int) -> None:
    """Linear decay from lr to lr_end over the env-step budget: big steps early, small ones once Q is
    nearly right, so a good policy is not trained away again (DQN on CartPole otherwise oscillates)."""
    lr = linear_schedule(self.cfg.lr, self.cfg.lr_end, env_steps / self.cfg.steps)
    self.opt.lr.assign(Tensor([lr], device=self.opt.lr.device)).realize()

  def train(self, evaluate) -> History:
    """Iterate until a greedy evaluation reaches the target return or a budget is spent."""
    cfg, mem, hist = self.cfg, self.memory, History()
    slot, window, trained, next_eval, read_at = 0, 0, 0, cfg.eval_every, self.iterations_to_next_read(hist)
    bar = common.progress(total=cfg.steps, desc="DQN")
    while not hist.stopped:
      sched = Tensor([linear_schedule(cfg.eps_start, cfg.eps_end, hist.env_steps / cfg.eps_steps), float(max(mem.size, 1))]).realize()
      ptr, log_slot = mem.ptr_var.bind(mem.pos), self.slot_var.bind(slot)
      if hist.env_steps < cfg.learning_starts: self.collect_jit(sched, ptr, log_slot)
      else:
        if window == 0: self.set_lr(hist.env_steps)      # after each scheduled read, so the episode budget leaves it alone
        self.iterate_jit(sched, ptr, log_slot)
        trained, before, hist.grad_steps = trained + 1, hist.grad_steps, hist.grad_steps + cfg.grad_steps
        for _ in range(hist.grad_steps // cfg.target_every - before // cfg.target_every): self.target_jit()
      mem.advance()
      hist.env_steps, slot, window = hist.env_steps + cfg.envs, slot + 1, window + 1
      bar.update(cfg.envs)
      scheduled = window == self.LOG or hist.env_steps >= next_eval or hist.env_steps >= cfg.steps
      if scheduled or slot == read_at:           # the extra reads find the iteration in which the episode budget is reached
        self.read_logs(hist, slot, trained)
        slot, trained, read_at, window = 0, 0, self.iterations_to_next_read(hist), 0 if scheduled else window
        bar.set_description(f"DQN return(20) {np.mean(hist.returns[-20:]) if hist.returns else 0:5.1f}")
      if hist.env_steps >= next_eval:
        next_eval += cfg.eval_every
        evaluate_during_training("DQN", hist, evaluate, cfg.target_return, hist.env_steps)
      if not hist.stopped and len(hist.returns) >= cfg.episodes: hist.stopped = "episode budget"
      if not hist.stopped and hist.env_steps >= cfg.steps: hist.stopped = "env-step budget"
    bar.update(close=True)
    return hist

  def iterations_to_next_read(self, hist: History) -> int:
    """At most `envs` episodes end per iteration, so the episode budget cannot be reached sooner."""
    return max(1, -(-(self.cfg.episodes - len(hist.returns)) // self.cfg.envs))

  def read_logs(self, hist: History, slots: int, trained: int) -> None:
    lengths = self.episode_log.numpy()[:slots].flatten()
    hist.returns += [float(v) for v in lengths if v > 0]
    if trained:
      losses = self.loss_log.numpy()[:slots][-trained:].tolist()
      check_finite("DQN", losses, hist, "--lr")
      hist.losses += losses

  def state_dict(self) -> dict: return get_state_dict(self.q_net)

  def load(self, state: dict) -> None:
    load_state_dict(self.q_net, state, verbose=False)
    self.update_target(tau=1.0)

# ---- REINFORCE -----------------------------------------------------------------------------------

class Reinforce:
  def __init__(self, cfg: ReinforceConfig):
    self.cfg, n = cfg, cfg.batch
    self.trunk = [nn.Linear(OBS_DIM, cfg.hidden), Tensor.relu]
    self.policy_head = nn.Linear(cfg.hidden, N_ACTIONS)
    self.value_head = nn.Linear(cfg.hidden, 1) if cfg.baseline else None
    self.params = get_parameters([self.trunk, self.policy_head, self.value_head])
    realize_init(self.params)
    self.opt = nn.optim.Adam(self.params, lr=cfg.lr)
    self.env = BatchedCartPole(n)
    self.obs_buf = Tensor.zeros(MAX_STEPS, n, OBS_DIM).contiguous().realize()   # (T, N, 4)
    self.action_buf = Tensor.zeros(MAX_STEPS, n).contiguous().realize()         # (T, N)
    self.mask_buf = Tensor.zeros(MAX_STEPS, n).contiguous().realize()           # 1 while the episode lasts
    self.alive = Tensor.ones(n).contiguous().realize()
    t, k = np.arange(MAX_STEPS)[:, None], np.arange(MAX_STEPS)[None, :]
    self.discount = Tensor(np.where(k >= t, cfg.gamma ** np.maximum(k - t, 0), 0.0).astype(np.float32))   # Γ, (T, T)
    self.t_var = Variable("t", 0, MAX_STEPS - 1)
    self.rollout_jit, self.update_jit = TinyJit(self.rollout_step), TinyJit(self.update)

  def logits(self, obs: Tensor) -> Tensor: return self.policy_head(obs.sequential(self.trunk))   # (B, 4) -> (B, 2)
  def q_values(self, obs: Tensor) -> Tensor: return self.logits(obs)     # argmax of logits = the greedy action

  def rollout_step(self, t: Variable) -> None:
    """Sample a ~ π(·|s) for every env, record (s, a, alive) at time t, step."""
    obs = self.env.obs
    action = Tensor.rand(self.cfg.batch) < self.logits(obs).softmax(-1)[:, 1]
    Tensor.realize(self.obs_buf[t:t + 1].assign(obs.unsqueeze(0)), self.action_buf[t:t + 1].assign(action.float().unsqueeze(0)),
                   self.mask_buf[t:t + 1].assign(self.alive.unsqueeze(0)))
    _, _, terminated, truncated, _ = self.env.step(action)
    Tensor.realize(self.env.state, self.env.steps, self.alive.assign(self.alive * (terminated | truncated).logical_not().float()))

  def discounted_returns(self, rewards: Tensor) -> Tensor:
    """G_t = Σ_k≥t γ^(k−t) r_k for every t and episode at once: G = Γ·r, (T, T) @ (T, N) -> (T, N)."""
    return self.discount @ rewards

  def update(self) -> Tensor:
    mask = self.mask_buf                                                    # (T, N); r_t = 1 while alive
    # each statistic is stored before its use: left lazy, every one of the T·N outputs of G-hat would re-sum
    # std's T·N terms, each of which re-sums mean's (a 10^9-term kernel at T = 500)
    returns = self.discounted_returns(mask).contiguous()
    count = mask.sum()
    mean = ((returns * mask).sum() / count).contiguous()
    std = ((((returns - mean) ** 2 * mask).sum() / count).sqrt()).contiguous()
    g_hat = ((returns - mean) / (std + 1e-8)).detach()
    hidden = self.obs_buf.sequential(self.trunk)                            # (T, N, H)
    log_probs = self.policy_head(hidden).log_softmax(-1)                    # (T, N, 2)
    log_pi_a = (log_probs * self.action_buf.cast(dtypes.int32).one_hot(N_ACTIONS)).sum(-1)
    advantage, loss = g_hat, Tensor(0.0)
    if self.value_head is not None:
      value = self.value_head(hidden).squeeze(-1)                           # V(s), (T, N)
      advantage = g_hat - value.detach()
      loss = 0.5 * (((value - g_hat) ** 2) * mask).sum() / count
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    loss = loss - (log_pi_a * advantage * mask).sum() / count - self.cfg.entropy * (entropy * mask).sum() / count
    gradient_step(loss, self.params, self.opt, 0.0)
    return loss.realize()

  def run_episodes(self) -> np.ndarray:
    """A batch of episodes in parallel from fresh starts, stopping once all have ended. -> lengths."""
    self.env.reset()
    Tensor.realize(self.alive.assign(Tensor.ones(self.cfg.batch)), self.mask_buf.assign(Tensor.zeros(MAX_STEPS, self.cfg.batch)))
    for t in range(MAX_STEPS):
      self.rollout_jit(self.t_var.bind(t))
      if t % 25 == 24 and self.alive.sum().item() == 0: break               # one host sync every 25 steps
    return self.mask_buf.sum(0).numpy()

  def train(self, evaluate) -> History:
    cfg, hist = self.cfg, History()
    next_eval = cfg.eval_every
    bar = common.progress(total=cfg.episodes, desc="REINFORCE")
    while not hist.stopped:
      lengths = self.run_episodes()
      hist.losses.append(self.update_jit().item())
      hist.returns += lengths.tolist()
      hist.env_steps += int(lengths.sum())
      check_finite("REINFORCE", hist.losses[-1:], hist, "--pg-lr")
      bar.update(len(lengths))
      bar.set_description(f"REINFORCE return(20) {np.mean(hist.returns[-20:]):5.1f}")
      if len(hist.returns) >= next_eval:
        next_eval += cfg.eval_every
        evaluate_during_training("REINFORCE", hist, evaluate, cfg.target_return, len(hist.returns))
      if not hist.stopped and len(hist.returns) >= cfg.episodes: hist.stopped = "episode budget"
    bar.update(close=True)
    return hist

  def modules(self) -> dict: return {"trunk": self.trunk, "policy": self.policy_head, **({"value": self.value_head} if self.value_head else {})}
  def state_dict(self) -> dict: return get_state_dict(self.modules())
  def load(self, state: dict) -> None: load_state_dict(self.modules(), state, verbose=False)

# ---- the success check (evaluation itself is in cartpole.py: GreedyEvaluator, play_numpy_episode) ----

def success_check(name: str, returns: np.ndarray, target: float) -> bool:
  """PASS when the mean over fresh greedy episodes (not the evaluation that stopped training) reaches the target."""
  return common.check(f"{name} mean greedy return", float(returns.mean()), target)


# --- plumbing ----------------------------------------------------------------------------------------

def plot_history(hist: History, name: str, x_loss: str, dest: Path) -> None:
  from common.plots import figure, save_figure, moving_average
  fig, (ax_r, ax_l) = figure(1, 2, size=(10, 3.8))
  returns = np.asarray(hist.returns)
  ax_r.plot(returns, lw=0.8, alpha=0.35, label="episode return")
  ax_r.plot(moving_average(returns, 20), lw=2, label="20-episode mean")
  if hist.evals: ax_r.plot([e[1] for e in hist.evals], [e[2] for e in hist.evals], "o", color="k", label="greedy eval (mean)")
  ax_r.axhline(SOLVED_RETURN, ls="--", color="gray", lw=1, label="solved (475)")
  ax_r.set(title=f"{name}: return per training episode", xlabel="episode", ylabel="return")
  ax_l.plot(hist.losses, lw=0.6)
  if len(hist.losses) > 50: ax_l.plot(moving_average(hist.losses, 50), lw=2)
  ax_l.set(title=f"{name}: loss", xlabel=x_loss, ylabel="loss")
  for ax in (ax_r, ax_l): ax.grid(alpha=0.3)
  ax_r.legend(fontsize=7)
  save_figure(fig, dest)

# ---- checkpoints: both agents in one safetensors file, "<agent>.<key>", with their architecture ---

MODEL = "cartpole-agents"

def save_agents(agents: dict, dest: str) -> None:
  meta = {"agents": list(agents), **{f"{n}_hidden": ag.cfg.hidden for n, ag in agents.items()}}
  if "reinforce" in agents: meta["reinforce_baseline"] = agents["reinforce"].cfg.baseline
  save_checkpoint({f"{n}.{k}": v for n, ag in agents.items() for k, v in ag.state_dict().items()}, dest, meta, script=SCRIPT, model=MODEL)
  print(f"saved {', '.join(agents)} to {dest}")

def load_agents(path: str, cfgs: dict) -> dict:
  """The agents `cfgs` names, with the width (and baseline) the checkpoint says; the first mismatch is one line."""
  tensors, meta = load_checkpoint(path, script=SCRIPT, model=MODEL, required_meta=("agents",))
  agents = {}
  for name, cfg in cfgs.items():
    if name not in meta["agents"]: raise UserError(f"checkpoint {path} holds no {name} agent (it has: {', '.join(map(str, meta['agents']))})")
    hidden, baseline = meta.get(f"{name}_hidden"), meta.get("reinforce_baseline", True)
    if not isinstance(hidden, int) or hidden <= 0 or not isinstance(baseline, bool): raise UserError(f"checkpoint {path}: bad {name} metadata")
    cfg = dataclasses.replace(cfg, hidden=hidden, **({"baseline": baseline} if name == "reinforce" else {}))
    check_memory({name: cfg})
    agents[name] = build_agent(name, cfg)
    part = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
    check_state_matches(agents[name].state_dict(), part, f"checkpoint {path} ({name})")
    agents[name].load(part)
  return agents

# ---- sizes that cannot fit are refused before any work ---------------------------------------------

def floats_needed(name: str, cfg) -> int:
  """A lower bound on the float32 values one agent holds at once: weights (with target net, gradients,
  Adam's moments), the replay ring, the (T, N, H) rollout activations, evaluation activations."""
  h = cfg.hidden
  if name == "dqn": return 6 * (h * h + 8 * h + 2) + 11 * cfg.buffer + 4 * h * (cfg.batch + cfg.envs + cfg.eval_episodes)
  return 5 * (8 * h + 3) + 3 * MAX_STEPS * cfg.batch * h + MAX_STEPS * MAX_STEPS + 2 * h * cfg.eval_episodes

def check_memory(cfgs: dict) -> None:
  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  need = 4 * sum(floats_needed(name, cfg) for name, cfg in cfgs.items())
  if need > total:
    sizes = ", ".join(f"{k} {getattr(cfg, k)}" for cfg in cfgs.values() for k in ("hidden", "buffer", "batch", "eval_episodes") if hasattr(cfg, k))
    raise UserError(f"these sizes ({sizes}) need at least {need / 1e9:.1f} GB, more than this machine's {total / 1e9:.1f} GB of memory")

# ---- --bench ----------------------------------------------------------------------------------------

def bench_envs(bench: Bench, quick: bool, rng: np.random.Generator) -> None:
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

def bench_dqn_steps(bench: Bench, cfg: DQNConfig, quick: bool, rng: np.random.Generator) -> None:
  dqn = DQN(cfg)
  act = TinyJit(lambda obs: dqn.q_values(obs).argmax(-1).realize())
  obs = CartPole(rng).reset()
  bench.run("action selection (host obs -> action)", lambda: int(act(Tensor(obs[None])).item()), iters=50 if quick else 1000)
  # a replay ring full of real transitions, then the gradient step alone at several batch sizes
  sched = Tensor([1.0, float(cfg.buffer)]).realize()
  for i in range(0, min(cfg.buffer, 4000), cfg.envs): dqn.collect_jit(sched, dqn.memory.ptr_var.bind(i), dqn.slot_var.bind(0))
  for b in ([32, 128] if quick else [32, 128, 512]):
    step = TinyJit(lambda sched, b=b: dqn.update(sched[1:2], b))       # one JIT per batch size
    bench.run(f"dqn train step B={b} (sample, TD target, Huber, Adam)", lambda: step(sched), iters=20 if quick else 200)
  bench.run(f"dqn iteration N={cfg.envs} B={cfg.batch} (act+step+store+{cfg.grad_steps} train steps)",
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

BENCH_CASES = ("envs", "steps", "solve")   # env steps; the DQN's and the MLP's train steps; training to solve

def run_bench(args: argparse.Namespace, cfgs: dict) -> int:
  bench, rng = Bench(PROJECT), common.seed_all(args.seed)
  if "envs" in args.cases: bench_envs(bench, args.quick, rng)
  if "steps" in args.cases: bench_dqn_steps(bench, config_from(args, DQNConfig), args.quick, rng)
  for name, cfg in cfgs.items() if "solve" in args.cases else ():   # end to end: time to solve (quick: its budget, which need not solve)
    agent = build_agent(name, cfg)
    evaluate = GreedyEvaluator(agent.q_values, cfg.eval_episodes)
    hists: list[History] = []
    timing = common.bench.time_fn(lambda agent=agent, evaluate=evaluate: hists.append(agent.train(evaluate)), warmup=0, iters=1)
    add_training_record(bench, name, timing, hists[0], args.quick)
  bench.print(f"{PROJECT} --bench")
  for r in bench.records:
    if "env_steps" in r: print(f"{r['case']}: {r['median_ms'] / 1e3:.1f} s, {r['env_steps']} env steps, {r['episodes']} episodes ({r['stopped']})")
  bench.write_json(args.json)
  return 0

def add_training_record(bench: Bench, name: str, timing: Timing, hist: History, quick: bool) -> None:
  bench.add(f"{name} train to solve{' (quick budget)' if quick else ''}", timing, env_steps=hist.env_steps, episodes=len(hist.returns),
            solved_at=hist.solved_at, stopped=hist.stopped, last_eval=hist.evals[-1][2] if hist.evals else None)

# ---- the command line ---------------------------------------------------------------------------------

def flag_of(f: dataclasses.Field) -> str: return f.metadata["flag"] or "--" + f.name.replace("_", "-")
def dest(f: dataclasses.Field) -> str: return flag_of(f)[2:].replace("-", "_")
def dests(cls) -> set[str]: return {dest(f) for f in dataclasses.fields(cls)}
def config_from(args, cls): return cls(**{f.name: getattr(args, dest(f)) for f in dataclasses.fields(cls)})
SHARED = dests(AgentConfig)
NOT_WITH_LOAD = (dests(DQNConfig) | dests(ReinforceConfig)) - {"eval_episodes", "target_return"}   # training, or the checkpoint's own

def add_flags(p: cli.ArgumentParser) -> None:
  p.add_argument("--agent", choices=["dqn", "reinforce", "both"], default="both", help="which agent(s) to train")
  p.add_argument("--cases", type=cli.choice_list(*BENCH_CASES), default=list(BENCH_CASES),
                 help="with --bench: which groups to time, comma-separated (solve: training each --agent to solve)")
  for group, cls, own in ((p, AgentConfig, True), (p.add_argument_group("DQN"), DQNConfig, False),
                          (p.add_argument_group("REINFORCE"), ReinforceConfig, False)):
    for f in dataclasses.fields(cls):
      if own != (dest(f) in SHARED): continue
      if f.metadata["type"] is bool: group.add_argument(flag_of(f), action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
      else: group.add_argument(flag_of(f), type=f.metadata["type"], default=f.default, help=f.metadata["help"])

def parse_args(argv=None) -> argparse.Namespace:
  p = common.project_parser(PROJECT, __doc__, quick_help="10 000 DQN env steps, 300 episodes, 20 evaluation episodes, pass at a mean return of 100",
                            save_help="the trained agents (.safetensors)", load_help="agents written by --save, evaluated instead of trained")
  add_flags(p)
  p.preset("quick", dqn_steps=10_000, episodes=300, eval_episodes=20, target_return=100.0)
  args = p.parse_args(argv)
  try: check_flags(args)
  except UserError as e: p.error(str(e))
  return args

def check_flags(args: argparse.Namespace) -> None:
  """Flag combinations that cannot mean what they say, refused before any work."""
  def refuse(msg: str): raise UserError(msg)
  def flag(name: str) -> str: return "--" + name.replace("_", "-")
  if "cases" in args.given and not args.bench: refuse("--cases chooses what --bench times; add --bench, or leave it out to train")
  if args.bench and args.save: refuse("--save: --bench times fresh training runs and keeps no agent; run without --bench to train and save")
  if args.bench and args.load: refuse("--load: --bench times fresh agents; run without --bench to evaluate a saved one")
  if args.load and args.save: refuse("--save with --load would only copy the file: --load evaluates a saved agent without training")
  if args.load and (typed := sorted(NOT_WITH_LOAD & args.given)):
    refuse(f"{flag(typed[0])}: --load evaluates the saved agent as it is (its size comes from the checkpoint) without training")
  if args.agent == "reinforce" and not args.bench and (typed := sorted((dests(DQNConfig) - SHARED) & args.given)):
    refuse(f"{flag(typed[0])} is a DQN flag and this run trains only REINFORCE")
  if args.agent == "dqn" and (typed := sorted((dests(ReinforceConfig) - SHARED) & args.given)):
    refuse(f"{flag(typed[0])} is a REINFORCE flag and this run trains only DQN")
  if args.eps_end > args.eps_start: refuse(f"--eps-end {args.eps_end} is above --eps-start {args.eps_start}")
  if args.buffer % args.dqn_envs: refuse(f"--buffer {args.buffer} must be a multiple of --dqn-envs {args.dqn_envs} (the ring takes N rows at a time)")
  if args.buffer < args.batch: refuse(f"--buffer {args.buffer} is smaller than --batch {args.batch}")
  if args.learning_starts < args.batch: refuse(f"--learning-starts {args.learning_starts} must be at least --batch {args.batch}")
  if args.grad_steps > MAX_GRAD_STEPS: refuse(f"--grad-steps {args.grad_steps}: at most {MAX_GRAD_STEPS} (they are unrolled into one compiled graph)")
  if args.agent != "reinforce" and not args.load and args.learning_starts >= args.dqn_steps:
    refuse(f"--learning-starts {args.learning_starts} leaves no training in the --dqn-steps {args.dqn_steps} budget")

def agent_configs(args: argparse.Namespace) -> dict:
  names = ["dqn", "reinforce"] if args.agent == "both" else [args.agent]
  return {name: config_from(args, DQNConfig if name == "dqn" else ReinforceConfig) for name in names}

def build_agent(name: str, cfg): return DQN(cfg) if name == "dqn" else Reinforce(cfg)

# ---- the run: one function per stage ------------------------------------------------------------------

def run_agent(name: str, cfg, agent, args, rng: np.random.Generator, timings: Bench) -> tuple[object, dict]:
  """Train (unless loaded), evaluate on fresh episodes, replay one numpy episode, check. -> (agent, record)"""
  print(f"\n== {name.upper()} ==")
  t0, cpu0 = time.perf_counter(), time.process_time()
  agent = agent if agent is not None else build_agent(name, cfg)
  evaluate = GreedyEvaluator(agent.q_values, cfg.eval_episodes)
  hist = None if args.load else agent.train(evaluate)
  if hist is not None: plot_history(hist, name.upper(), "gradient step" if name == "dqn" else "update", Path(args.out) / f"{name}_curve.png")
  # wall time, and this process's CPU time: on a shared machine the second is what an idle one would take
  train_s, train_cpu_s, t1 = time.perf_counter() - t0, time.process_time() - cpu0, time.perf_counter()
  final = evaluate()                                   # fresh episodes, not the ones that stopped training
  eval_s = time.perf_counter() - t1
  played, act_ms = play_numpy_episode(agent.q_values, rng)
  rec = {"train_wall_s": train_s, "train_cpu_s": train_cpu_s, "eval_mean": float(final.mean()), "eval_std": float(final.std()),
         "eval_min": float(final.min()), "numpy_env_return": played, "numpy_env_ms_per_action": act_ms}
  timings.add(f"{name} greedy evaluation ({cfg.eval_episodes} episodes)", Timing([], [eval_s]), rate=(cfg.eval_episodes, "episodes/s"))
  if hist is not None:
    add_training_record(timings, name, Timing([], [train_s]), hist, args.quick)
    rec.update(env_steps=hist.env_steps, episodes=len(hist.returns), grad_steps=hist.grad_steps or len(hist.losses), solved_at=hist.solved_at,
               stopped=hist.stopped, evals=hist.evals)
    print(f"{name}: stopped ({hist.stopped}) after {hist.env_steps} env steps, {len(hist.returns)} episodes, "
          f"{train_s:.1f} s wall ({train_cpu_s:.1f} s CPU)")
    if name == "dqn" and hist.grad_steps == 0: print("warning: the budget ended before --learning-starts: DQN took no gradient step", file=sys.stderr)
  print(f"{name}: greedy return over {cfg.eval_episodes} fresh episodes {final.mean():.1f} ± {final.std():.1f} (min {final.min():.0f}); "
        f"one numpy-env episode: {played} ({act_ms:.2f} ms per action)")
  rec["passed"] = success_check(name, final, cfg.target_return)
  return agent, rec

def write_outputs(args, agents: dict, records: dict, timings: Bench) -> None:
  if args.save: save_agents(agents, args.save)
  out = Path(args.out)
  save_json({"seed": args.seed, "quick": args.quick, "loaded": args.load, "agents": records}, out / "summary.json")
  print(f"wrote {out / 'summary.json'}" + ("" if args.load else " and the learning curves"))
  timings.write_json(args.json)

def main() -> int:
  args = parse_args()
  cfgs = agent_configs(args)
  if args.bench: return run_bench(args, cfgs)
  if not args.load: check_memory(cfgs)
  rng = common.seed_all(args.seed)
  agents = load_agents(args.load, cfgs) if args.load else {}
  cli.check_out_dir(args)
  timings, records = Bench(PROJECT), {}
  for name, cfg in cfgs.items(): agents[name], records[name] = run_agent(name, cfg, agents.get(name), args, rng, timings)
  write_outputs(args, agents, records, timings)
  return 0 if all(r["passed"] for r in records.values()) else 1


if __name__ == "__main__":
  sys.exit(common.run_main(main))
