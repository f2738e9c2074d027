#!/usr/bin/env python3
"""PyTorch (and Gymnasium) baselines for rl_agents.py --bench: the same workloads, same shapes.

  * mlp 4-128-128-2 Adam step B=128   the anchor workload (MSE to a fixed target, backward, Adam)
  * dqn train step B=32/128/512       sample a minibatch from a (capacity, 11) replay table on the
                                      device, Q(s, a), max_a' Q⁻(s', a'), Huber, clip to norm 10, Adam
  * gymnasium env step (1 env)        Gymnasium's CartPole-v1 (numpy, one env), random actions
  * gymnasium vector env step N=...   Gymnasium's CartPoleVectorEnv (numpy, vectorized) at N = 1..8192

Case names match rl_agents.py --bench so common.compare can put them side by side. PyTorch and
Gymnasium are optional: neither is needed by rl_agents.py.

    DEV=CUDA python3 reinforcement-learning/torch_reference.py --json out/rl_torch.json   # GPU if present
    python3 reinforcement-learning/torch_reference.py --device cpu --quick
"""
import common   # noqa: F401  (flag translation, one-line errors)
import sys
from common import cli

PROJECT = "reinforcement-learning"
OBS_DIM, N_ACTIONS, HIDDEN, CAPACITY = 4, 2, 128, 50_000


def parse_args(argv=None):
  p = cli.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
  p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="torch device (auto: cuda when available)")
  p.add_argument("--json", metavar="PATH", default=None, help="also write one JSON record per case here")
  p.add_argument("--quick", action="store_true", help="fewer repeats and sizes (seconds)")
  p.add_argument("--seed", type=cli.seed_int, default=0, help="random seed")
  p.add_argument("--threads", type=cli.positive_int, default=None,
                 help="torch CPU threads (default: torch's choice; 1 matches tinygrad's CPU backend)")
  return p.parse_args(argv)


def main(args) -> int:
  try:
    import torch
  except ImportError:
    raise cli.UserError("PyTorch is not installed: pip install torch (it is only needed for this reference)")
  import numpy as np
  from common.bench import Bench
  dev = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
  if dev == "cuda" and not torch.cuda.is_available(): raise cli.UserError("--device cuda: torch sees no CUDA device")
  torch.manual_seed(args.seed)
  if args.threads: torch.set_num_threads(args.threads)
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  bench = Bench(PROJECT, device="torch:" + dev, renderer="torch " + torch.__version__)
  iters = 20 if args.quick else 200

  def mlp():
    return torch.nn.Sequential(torch.nn.Linear(OBS_DIM, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN),
                               torch.nn.ReLU(), torch.nn.Linear(HIDDEN, N_ACTIONS)).to(dev)

  net = mlp()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  x, y = torch.randn(128, OBS_DIM, device=dev), torch.randn(128, N_ACTIONS, device=dev)
  def mlp_step():
    loss = ((net(x) - y) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
  bench.run("mlp 4-128-128-2 Adam step B=128", mlp_step, iters=iters, sync=sync)

  q_net, target_net = mlp(), mlp()
  target_net.load_state_dict(q_net.state_dict())
  q_opt = torch.optim.Adam(q_net.parameters(), lr=1e-3)
  table = torch.randn(CAPACITY, 11, device=dev)
  table[:, 4] = torch.randint(0, 2, (CAPACITY,), device=dev).float()     # action
  table[:, 5], table[:, 6] = 1.0, (torch.rand(CAPACITY, device=dev) < 0.05).float()   # reward, terminated
  for b in ([32, 128] if args.quick else [32, 128, 512]):
    def dqn_step(b=b):
      rows = table[torch.randint(0, CAPACITY, (b,), device=dev)]
      s, act, r, term, s2 = rows[:, :4], rows[:, 4].long(), rows[:, 5], rows[:, 6], rows[:, 7:]
      q_sa = q_net(s).gather(1, act[:, None]).squeeze(1)
      with torch.no_grad():   # double DQN, rl_agents.py's default: θ picks a', θ⁻ values it
        best_next = q_net(s2).argmax(1, keepdim=True)
        td_target = r + 0.99 * (1 - term) * target_net(s2).gather(1, best_next).squeeze(1)
      loss = torch.nn.functional.huber_loss(q_sa, td_target, delta=1.0)
      q_opt.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(q_net.parameters(), 10.0)
      q_opt.step()
    bench.run(f"dqn train step B={b} (sample, TD target, Huber, Adam)", dqn_step, iters=iters, sync=sync)

  try:
    import gymnasium as gym
  except ImportError:
    gym = None
    print("note: gymnasium is not installed, so its environment steps/s are not measured (pip install gymnasium)")
  if gym is not None:
    rng = np.random.default_rng(args.seed)
    env, steps = gym.make("CartPole-v1"), 200 if args.quick else 2000
    env.reset(seed=args.seed)
    def gym_env():
      for _ in range(steps):
        _, _, term, trunc, _ = env.step(int(rng.integers(2)))
        if term or trunc: env.reset()
    bench.run("gymnasium env step (1 env)", gym_env, rate=(steps, "env-steps/s"), warmup=1, iters=5 if args.quick else 20, sync=lambda: None)
    for n in ([1, 64] if args.quick else [1, 64, 1024, 8192]):
      venv = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
      venv.reset(seed=args.seed)
      def vec_step(venv=venv, n=n): venv.step(rng.integers(0, 2, n))
      bench.run(f"gymnasium vector env step N={n}", vec_step, rate=(n, "env-steps/s"), iters=iters, sync=lambda: None)
  bench.print(f"{PROJECT} PyTorch / Gymnasium reference")
  bench.write_json(args.json)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_main(lambda: main(parse_args()), open_device=False))     # torch only: tinygrad's device is not needed
