"""CartPole-v1 twice, with Gymnasium's exact dynamics: `CartPole` in numpy (float64, one episode, for
play and as the reference) and `BatchedCartPole`, N environments as one (N, 4) tinygrad tensor on the
device; and greedy evaluation of any scoring network on them. rl_agents.py trains its agents here.

    env = BatchedCartPole(64)
    next_obs, reward, terminated, truncated, length = env.step(actions)    # (N,) actions -> all (N, ...)
    returns = GreedyEvaluator(q_values, 100)()                             # 100 greedy episodes at once

THE PROBLEM. A pole hinged on a cart; each step the agent pushes the cart left or right with 10 N and
gets +1 while the pole stays within ±12° and the cart within ±2.4 m. An episode ends by *termination*
(the pole fell: no future reward) or by *truncation* at 500 steps (a time limit: the state still has a
future, we just stopped looking). Solved = mean return ≥ 475 over 100 greedy episodes.

THE DYNAMICS. State s = (x, ẋ, θ, θ̇); with F = ±10, m_c = 1, m_p = 0.1, l = 0.5 (half the
pole), g = 9.8, τ = 0.02 s, Euler integration:
    temp = (F + m_p·l·θ̇²·sin θ) / (m_c + m_p)
    θ̈    = (g·sin θ − cos θ·temp) / (l·(4/3 − m_p·cos²θ / (m_c + m_p)))
    ẍ    = temp − m_p·l·θ̈·cos θ / (m_c + m_p)
    x ← x + τẋ,  ẋ ← ẋ + τẍ,  θ ← θ + τθ̇,  θ̇ ← θ̇ + τθ̈
`BatchedCartPole.step` resets finished environments in the same call, so act → step → store can run
on the device inside one TinyJit'd function; it returns the true final observation of a finished
episode (what a TD target needs) while its state already holds the next episode's start.
"""
import common   # noqa: F401  (first: turns NV=1 / CUDA=1 / CPU=1 into DEV=... before tinygrad reads it)
import math, time
import numpy as np
from tinygrad import Tensor, TinyJit, dtypes

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

# ---- greedy evaluation: many episodes in parallel on the device, one on the numpy env -----------------

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
