#!/usr/bin/env python3
"""PyTorch baseline for quantize.py and llm.py (edge_optimize.py --bench): the same matmuls, the same copy-bandwidth stream and the same
LLaMA-shaped fp16 decode step (random weights, KV cache, batch 1, greedy), timed with the repo's harness
so `common.compare` can put tinygrad and PyTorch side by side.

    python3 edge-deploy/torch_reference.py --json out/edge-torch.json            # CUDA if present, else CPU
    python3 edge-deploy/torch_reference.py --llm-config tiny --quick             # seconds on a CPU

PyTorch runs the decode eagerly (the baseline a user gets by default) and, on CUDA, once more with the step
captured in a CUDA graph (time_graphed_decode): the same math, attention masked over the whole cache, without
Python's launches in between.
Optional: torch is not a dependency of this repo; without it the script says so and exits with status 2.
"""
from __future__ import annotations
import math, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))    # llm.py, for the model shapes (also when imported)
import common
from common import UserError
from common.bench import Bench
from common.cli import int_list, positive_int

PROJECT = "edge-deploy"


def main() -> int:
  p = common.project_parser(PROJECT, __doc__)
  p.add_argument("--sizes", type=int_list, default=None, help="matmul sizes (default 256,1024,4096 on CUDA, 256,1024 on CPU)")
  p.add_argument("--llm-config", default=None, help="preset or dim,layers,heads,kv_heads,hidden,vocab (default llama3.2-1b on CUDA, small on CPU)")
  p.add_argument("--llm-tokens", type=positive_int, default=32, help="tokens decoded in the timed run")
  p.add_argument("--copy-mib", type=positive_int, default=None, help="stream buffer MiB (default 1024 on CUDA, 256 on CPU)")
  args = p.parse_args()
  try:
    import torch
  except ImportError:
    raise UserError("PyTorch is not installed (pip install torch); it is only needed for this optional baseline")
  import llm                        # the tinygrad decode's model shapes, so both sides decode the same model
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  torch.manual_seed(args.seed)
  bench = Bench(PROJECT, device="torch:" + dev, renderer="torch " + torch.__version__)
  timed = {"iters": 5, "max_seconds": 0.3} if args.quick else {"iters": 10, "max_seconds": 2.0}

  # matmul GFLOP/s: inputs on the device before timing, synchronized around every call
  sizes = args.sizes or ([128] if args.quick else [256, 1024, 4096] if dev == "cuda" else [256, 1024])
  for n in sizes:
    for name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
      a, b = torch.randn(n, n, dtype=dt, device=dev), torch.randn(n, n, dtype=dt, device=dev)
      bench.run(f"matmul {n} {name}", lambda: a @ b, rate=(2 * n**3 / 1e9, "GFLOP/s"), sync=sync, **timed)

  # copy bandwidth: y = x + 1 over float32, read + write
  mib = args.copy_mib or (64 if args.quick else 1024 if dev == "cuda" else 256)
  buf = [torch.ones(mib * 2**20 // 4, device=dev)]          # in a list, so it can be freed after timing
  copy = bench.run(f"stream y=x+1 {mib} MiB", lambda: buf[0] + 1, rate=(2 * buf[0].numel() * 4 / 1e9, "GB/s"), sync=sync, **timed)["value"]
  buf.clear()

  # LLaMA-shaped decode in fp16 with a KV cache, the same math as llm.llama_decode
  text = args.llm_config or ("tiny" if args.quick else "llama3.2-1b" if dev == "cuda" else "small")
  try: cfg = llm.parse_llama_config(text)
  except Exception as e: raise UserError(f"--llm-config: {e}")
  H, Hkv, hd, d, ctx = cfg.heads, cfg.kv_heads, cfg.hd, cfg.dim, args.llm_tokens + 8
  half = torch.float16
  def R(*s): return torch.randn(*s, dtype=half, device=dev) * 0.02
  w = {"embed": R(cfg.vocab, d), "norm": torch.ones(d, dtype=half, device=dev)}
  for i in range(cfg.layers):
    w |= {f"{i}.wq": R(H * hd, d), f"{i}.wk": R(Hkv * hd, d), f"{i}.wv": R(Hkv * hd, d), f"{i}.wo": R(d, H * hd),
          f"{i}.w_gate": R(cfg.hidden, d), f"{i}.w_up": R(cfg.hidden, d), f"{i}.w_down": R(d, cfg.hidden),
          f"{i}.attn_norm": torch.ones(d, dtype=half, device=dev), f"{i}.ffn_norm": torch.ones(d, dtype=half, device=dev)}
  if not cfg.tied: w["head"] = R(cfg.vocab, d)
  caches = [torch.zeros(2, Hkv, ctx, hd, dtype=half, device=dev) for _ in range(cfg.layers)]
  inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64, device=dev) / hd)
  ang = torch.arange(ctx, dtype=torch.float64, device=dev)[:, None] * inv[None]
  cos_t, sin_t = ang.cos().float(), ang.sin().float()

  def norm(x, g): return (x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + cfg.norm_eps)).to(half) * g
  def rope(x, c, s):
    x1, x2 = x[..., :hd // 2].float(), x[..., hd // 2:].float()
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(half)

  @torch.no_grad()
  def step(token, pos):
    x = w["embed"][token].reshape(1, d)
    c, s = cos_t[pos], sin_t[pos]
    for i in range(cfg.layers):
      h = norm(x, w[f"{i}.attn_norm"])
      q = rope((h @ w[f"{i}.wq"].T).reshape(H, hd), c, s)
      k = rope((h @ w[f"{i}.wk"].T).reshape(Hkv, hd), c, s)
      v = (h @ w[f"{i}.wv"].T).reshape(Hkv, hd)
      caches[i][0, :, pos], caches[i][1, :, pos] = k, v
      keys, values = caches[i][0, :, :pos + 1].float(), caches[i][1, :, :pos + 1].float()
      scores = q.reshape(Hkv, H // Hkv, hd).float() @ keys.transpose(-1, -2) / math.sqrt(hd)
      x = x + (scores.softmax(-1) @ values).reshape(1, H * hd).to(half) @ w[f"{i}.wo"].T
      h = norm(x, w[f"{i}.ffn_norm"])
      x = x + (torch.nn.functional.silu(h @ w[f"{i}.w_gate"].T) * (h @ w[f"{i}.w_up"].T)) @ w[f"{i}.w_down"].T
    return (norm(x, w["norm"]) @ w["embed" if cfg.tied else "head"].T).float().argmax(-1)

  state = {"token": torch.tensor([1], device=dev), "pos": 0}
  def one_token():
    state["token"] = step(state["token"], state["pos"])
    state["pos"] += 1
  bytes_per_token = (cfg.params_read_per_token() * 2 + cfg.kv_bytes(args.llm_tokens // 2))
  rec = bench.run("llm decode fp16", one_token, rate=(1, "tok/s"), warmup=2, iters=max(3, args.llm_tokens - 3), sync=sync,
                  bytes_per_token=bytes_per_token)
  rec["achieved_GBps"] = bytes_per_token / rec["median_ms"] * 1e3 / 1e9
  rec["fraction_of_copy_bw"] = rec["achieved_GBps"] / copy
  if dev == "cuda": time_graphed_decode(torch, bench, cfg, w, caches, cos_t, sin_t, norm, rope, ctx, bytes_per_token, copy, args.llm_tokens)
  bench.print(f"{PROJECT} PyTorch reference ({text})")
  for r in bench.records:
    if "fraction_of_copy_bw" in r:
      print(f"{r['case']}: {r['achieved_GBps']:.3g} GB/s = {100 * r['fraction_of_copy_bw']:.1f} % of the {copy:.3g} GB/s copy bandwidth")
  bench.write_json(args.json)
  return 0


def time_graphed_decode(torch, bench, cfg, w, caches, cos_t, sin_t, norm, rope, ctx: int, bytes_per_token: int, copy: float, tokens: int):
  """The same decode step captured once in a CUDA graph and replayed per token: what PyTorch reaches without
  Python's per-op launches. A graph replays fixed kernels on fixed buffers, so the position is a device
  tensor: the KV cache is written with index_copy_ at it and attention reads the whole cache under a mask
  (ctx is a few dozen positions here, so the extra reads are noise next to the weights)."""
  H, Hkv, hd, d = cfg.heads, cfg.kv_heads, cfg.hd, cfg.dim
  positions = torch.arange(ctx, device="cuda")
  token, pos = torch.ones(1, dtype=torch.long, device="cuda"), torch.zeros(1, dtype=torch.long, device="cuda")

  @torch.no_grad()
  def step():
    x = w["embed"][token].reshape(1, d)
    c, s = cos_t[pos], sin_t[pos]                                        # (1, hd/2)
    mask = torch.where(positions <= pos, 0.0, float("-inf"))             # (ctx,)
    for i in range(cfg.layers):
      h = norm(x, w[f"{i}.attn_norm"])
      q = rope((h @ w[f"{i}.wq"].T).reshape(H, hd), c, s)
      k = rope((h @ w[f"{i}.wk"].T).reshape(Hkv, hd), c, s)
      v = (h @ w[f"{i}.wv"].T).reshape(Hkv, hd)
      caches[i][0].index_copy_(1, pos, k.reshape(Hkv, 1, hd))
      caches[i][1].index_copy_(1, pos, v.reshape(Hkv, 1, hd))
      keys, values = caches[i][0].float(), caches[i][1].float()          # (Hkv, ctx, hd)
      scores = q.reshape(Hkv, H // Hkv, hd).float() @ keys.transpose(-1, -2) / math.sqrt(hd) + mask
      x = x + (scores.softmax(-1) @ values).reshape(1, H * hd).to(torch.float16) @ w[f"{i}.wo"].T
      h = norm(x, w[f"{i}.ffn_norm"])
      x = x + (torch.nn.functional.silu(h @ w[f"{i}.w_gate"].T) * (h @ w[f"{i}.w_up"].T)) @ w[f"{i}.w_down"].T
    return (norm(x, w["norm"]) @ w["embed" if cfg.tied else "head"].T).float().argmax(-1)

  side = torch.cuda.Stream()                                             # warm up off the default stream, as capture requires
  side.wait_stream(torch.cuda.current_stream())
  with torch.cuda.stream(side):
    for _ in range(3): step()
  torch.cuda.current_stream().wait_stream(side)
  graph = torch.cuda.CUDAGraph()
  with torch.cuda.graph(graph): next_token = step()
  pos.zero_()

  def one_token():
    graph.replay()
    token.copy_(next_token)
    pos.add_(1).remainder_(ctx)                                          # stays inside the cache however long the bench runs
  rec = bench.run("llm decode fp16 (CUDA graph)", one_token, rate=(1, "tok/s"), warmup=2, iters=max(3, tokens - 3),
                  sync=torch.cuda.synchronize, bytes_per_token=bytes_per_token)
  rec["achieved_GBps"] = bytes_per_token / rec["median_ms"] * 1e3 / 1e9
  rec["fraction_of_copy_bw"] = rec["achieved_GBps"] / copy


if __name__ == "__main__":
  sys.exit(common.run_main(main))
