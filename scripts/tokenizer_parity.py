"""Does edge-deploy/gguf_tokenizer.py give llama.cpp's token ids? Tokenizes a text with both, on one GGUF file, and
prints MATCH or the first difference with the tokens around it. llama.cpp is not a dependency: point --llama-tokenize
at its `llama-tokenize` binary (from a llama.cpp build, e.g. the copy vendored in llama-cpp-python's source).

    python3 scripts/tokenizer_parity.py out/llama1b-q4_0.gguf --llama-tokenize ~/llama.cpp/build/bin/llama-tokenize
    python3 scripts/tokenizer_parity.py FILE.gguf --text notes.txt --no-bos --no-parse-special --llama-tokenize BIN

Without --text it uses the paragraph below (punctuation, contractions, numbers, runs of spaces, a tab, non-ASCII text
and emoji); special tokens in the text (<|eot_id|>, <|im_start|>) are parsed unless --no-parse-special.
"""
from __future__ import annotations
import ast, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "edge-deploy")]
from common.cli import ArgumentParser, UserError, existing_file, run_main  # noqa: E402

PARAGRAPH = (
  "Hello, world! It's a test: don't panic, I'm fine; we'll see what they've done (and you'd agree).\n"
  'Numbers: 12345, 3.14, -0.5e10, 1,000,000 and 2024-06-01 at 10:30pm... $99.99 or 50%?\n'
  'Multiple   spaces  here,\ta tab, and trailing spaces   \n'
  '\n'
  'Café naïve résumé — “quotes” ‘single’ ... 日本語のテキスト, 中文, 한국어 and an emoji 🙂👍🏽!\n'
  "UPPER CASE DON'T I'M WE'LL, MiXeD CaSe, e-mail: someone@example.com, url https://x.y/z?q=1&r=2#f\n"
  '    indented line\n'
  'end'
)


def main() -> int:
  p = ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("gguf", type=existing_file, help="the GGUF file (its tokenizer metadata)")
  p.add_argument("--llama-tokenize", required=True, type=existing_file, metavar="BIN", help="llama.cpp's llama-tokenize binary")
  p.add_argument("--text", type=existing_file, default=None, help="a UTF-8 text file (default: the paragraph in this script)")
  p.add_argument("--no-bos", action="store_true", help="no BOS token on either side")
  p.add_argument("--no-parse-special", action="store_true", help="special-token text is plain text on both sides")
  args = p.parse_args()
  import gguf_file as gf
  from gguf_tokenizer import Tokenizer
  try: text = Path(args.text).read_text(encoding="utf-8") if args.text else PARAGRAPH
  except UnicodeDecodeError as e: raise UserError(f"--text {args.text}: not UTF-8 text ({e.reason} at byte {e.start})")
  tok = Tokenizer.from_gguf_metadata(gf.GGUFFile(args.gguf).metadata)
  ours = tok.encode(text, add_bos=False if args.no_bos else None, parse_special=not args.no_parse_special)
  with tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", suffix=".txt") as f:
    f.write(text)
    f.flush()
    cmd = [args.llama_tokenize, "-m", args.gguf, "-f", f.name, "--ids", "--log-disable", "--no-escape"]
    cmd += ["--no-bos"] * args.no_bos + ["--no-parse-special"] * args.no_parse_special
    try: r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e: raise UserError(f"--llama-tokenize {args.llama_tokenize}: cannot be run ({e.strerror or e})")
    except subprocess.TimeoutExpired: raise UserError(f"--llama-tokenize {args.llama_tokenize}: no answer in 300 s")
  lists = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
  if r.returncode or not lists: raise UserError(f"llama-tokenize gave no ids (exit {r.returncode}): {(r.stderr.strip().splitlines() or [''])[-1]}")
  theirs = ast.literal_eval(lists[-1])
  print(f"{args.gguf}: pre-tokenizer {tok.pre}, {tok.vocab_size} tokens; this repo {len(ours)} ids, llama.cpp {len(theirs)} ids: "
        f"{'MATCH' if ours == theirs else 'DIFFER'}")
  if ours == theirs: return 0
  k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
  show = lambda ids: [(i, tok.tokens[i] if 0 <= i < tok.vocab_size else "?") for i in ids[max(0, k - 3):k + 4]]   # noqa: E731
  print(f"first difference at {k}:\n  this repo {show(ours)}\n  llama.cpp {show(theirs)}")
  return 1


if __name__ == "__main__":
  sys.exit(run_main(main, open_device=False))
