"""Command-line plumbing every script shares: the standard flags, one-line errors, PASS/FAIL checks.

Bad input never ends in a traceback. A script raises `UserError("what is wrong")` (or calls
`fail(...)`), and `run_main` prints `error: what is wrong` on one line and exits with status 2.
argparse's own errors (unknown flag, a value of the wrong type) are one line and status 2 as well.
A success check that fails (`check(...)` returning False) is not bad input: scripts exit 1 then.
"""
from __future__ import annotations
import argparse, os, sys
from typing import Callable, NoReturn


class UserError(Exception):
  """Bad input or an impossible request; the message is shown alone on one line."""


def fail(msg: str) -> NoReturn:
  raise UserError(msg)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with a one-line error (no usage block) and defaults shown in --help."""
  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
    super().__init__(*args, **kwargs)

  def error(self, message: str) -> NoReturn:
    print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
    raise SystemExit(2)


def first_paragraph(doc: str | None) -> str:
  return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def project_parser(project: str, doc: str | None, *, quick_help: str = "tiny setting for tests (seconds)") -> ArgumentParser:
  """The flags every project script has. `project` names the default output folder out/<project>/."""
  p = ArgumentParser(description=first_paragraph(doc),
                     epilog="The module docstring is the tutorial: python3 -c 'help(\"<script>\")' or read the file.")
  g = p.add_argument_group("common flags")
  g.add_argument("--bench", action="store_true", help="time the hot paths and print a table instead of the demo")
  g.add_argument("--json", metavar="PATH", default=None, help="write the timing records (common.bench schema) of whatever ran here")
  g.add_argument("--out", metavar="DIR", default=os.path.join("out", project), help="folder for images, plots, checkpoints and the summary")
  g.add_argument("--seed", type=int, default=0, help="random seed (numpy and tinygrad)")
  g.add_argument("--quick", action="store_true", help=quick_help)
  g.add_argument("--save", metavar="PATH", default=None, help="write the trained model here (.safetensors, atomically)")
  g.add_argument("--load", metavar="PATH", default=None, help="load a model saved with --save instead of training from scratch")
  return p


# ---- argparse value types: a wrong value is a one-line argparse error -------------------------

def positive_int(text: str) -> int:
  try: v = int(text)
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
  if v <= 0: raise argparse.ArgumentTypeError(f"{v} must be > 0")
  return v


def nonnegative_float(text: str) -> float:
  try: v = float(text)
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not a number")
  if not v >= 0: raise argparse.ArgumentTypeError(f"{v} must be >= 0")
  return v


def positive_float(text: str) -> float:
  v = nonnegative_float(text)
  if v == 0: raise argparse.ArgumentTypeError("must be > 0")
  return v


def probability(text: str) -> float:
  v = nonnegative_float(text)
  if v > 1: raise argparse.ArgumentTypeError(f"{v} must be between 0 and 1")
  return v


def int_list(text: str) -> list[int]:
  """'64,128' -> [64, 128]"""
  try: vals = [int(x) for x in text.split(",") if x.strip()]
  except ValueError: raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")
  if not vals or any(v <= 0 for v in vals): raise argparse.ArgumentTypeError(f"{text!r} needs positive integers")
  return vals


def existing_path(text: str) -> str:
  if not os.path.exists(text): raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
  return text


# ---- running ----------------------------------------------------------------------------------

def run_main(fn: Callable[[], int | None]) -> int:
  """Run a script's body: UserError -> one line on stderr, exit 2; Ctrl-C -> exit 130."""
  try:
    return int(fn() or 0)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("\ninterrupted: files already written are complete (they are written atomically)", file=sys.stderr)
    return 130
  except MemoryError as e:
    print(f"error: out of memory ({e or 'device allocation failed'}); try a smaller size or batch", file=sys.stderr)
    return 2


def check(name: str, measured: float, target: float, *, higher_is_better: bool = True, unit: str = "") -> bool:
  """Print `PASS`/`FAIL` for a success criterion with the measured value, in the spirit of
  tinygrad's TARGET_EVAL_ACC_PCT. Returns whether it passed."""
  ok = measured >= target if higher_is_better else measured <= target
  op = ">=" if higher_is_better else "<="
  print(f"{'PASS' if ok else 'FAIL'}: {name} = {measured:.4g}{unit} (target {op} {target:.4g}{unit})")
  return ok
