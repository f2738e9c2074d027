r"""The tokenizer of a GGUF language model (LLaMA-3.x, Qwen2, Qwen3): text <-> token ids, read from the GGUF's
own metadata, in plain Python (no `regex`, no `tokenizers`, no jinja). Not a script: the GGUF runner imports it.

Both families use byte-level BPE (`tokenizer.ggml.model = "gpt2"`). Encoding a string goes in four steps:

  1. Special tokens first. Every control token (`<|begin_of_text|>`, `<|eot_id|>`, `<|im_start|>`, ...) and
     user-defined token (Qwen's `<think>`) is found literally in the text, longest first, and becomes its id
     whole; BPE never sees it. With parse_special=False only the user-defined ones are (as in llama.cpp), so a
     prompt cannot smuggle in a control token.
  2. Pre-tokenizer: each remaining stretch is cut into short "words" by the model's split pattern (LLaMA-3's,
     the one GPT-4 uses; Qwen2 differs only in taking digits one at a time instead of up to three):
         (?i:'s|'t|'re|'ve|'m|'ll|'d)  a contraction: "don't" -> "don", "'t"
         [^\r\n\p{L}\p{N}]?\p{L}+      letters, with one leading space or symbol: " hello", "(word"
         \p{N}{1,3}                    digits in threes: "12345" -> "123", "45"     (Qwen2: \p{N})
          ?[^\s\p{L}\p{N}]+[\r\n]*     symbols, with one leading space and trailing newlines: " ...\n"
         \s*[\r\n]+                    whitespace through its last newline: "  \n\n"
         \s+(?!\S)                     whitespace not followed by text: the run gives its last char back,
                                       so "a   b" -> "a", "  ", " b" (the space then starts the next word)
         \s+                           a single space or tab before text that nothing above took
     At each position the first alternative that matches wins. Python's `re` has no \p{L} (letter) or \p{N}
     (number), so split_words is a small scanner that tries the alternatives in that order on Unicode
     categories (unicodedata: L* letters, N* numbers; whitespace = Unicode White_Space).
  3. Bytes to symbols: each word's UTF-8 bytes become printable characters by GPT-2's table (bytes that are
     printable keep their own character, the other 68 move to U+0100..U+0143; a space becomes "Ġ", a newline
     "Ċ"), so every token, even half of a UTF-8 character, is a string and the vocabulary covers all bytes.
  4. BPE: start from one symbol per byte and repeatedly merge the adjacent pair whose merge comes earliest in
     `tokenizer.ggml.merges` (rank = index; the leftmost pair on a tie), until no adjacent pair has a merge:
         "Ġ h e l l o" -> "Ġ he l l o" -> "Ġ he ll o" -> "Ġhe ll o" -> "Ġhell o" -> "Ġhello"
     A heap of candidate pairs keeps a long word O(n log n); words repeat, so each word's ids are cached.
     LLaMA-3 first looks the whole word up and takes it as one token if the vocabulary has it (llama.cpp's
     ignore_merges, as Hugging Face's tokenizer does for that model).

Decoding joins the tokens' strings, maps the GPT-2 characters back to bytes and decodes UTF-8; control tokens
print nothing unless asked. A token can end inside a multi-byte character (a CJK character or an emoji is often
two or three tokens), so decode_stream() holds such a tail back until the character is complete: a streamed
reply never shows a broken character.

Chat templates are jinja programs in `tokenizer.chat_template`. Running jinja is out of scope; the two shapes these
models use are recognised from the template's text and written out directly:
    llama3  <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
            (3.1 and later always open with a system block that states the knowledge cut-off and today's date)
    chatml  <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
            (Qwen2/2.5 add their default system message when none is given; Qwen3 has none)
Any other template gives chat_template_name "none" and the user text unchanged.

Use it
    tok = Tokenizer.from_gguf_metadata(meta)         # meta: GGUF key -> value, from the GGUF reader
    ids = tok.encode(tok.chat_prompt("Why is the sky blue?"))   # BOS added when the model wants it (LLaMA-3)
    emit = tok.decode_stream()                       # then, per generated id: print(emit(i), end="", flush=True)
    stop = i in tok.eos_ids                          # eos plus every end-of-turn token the vocabulary has
Checked by tests/test_edge_gguf_tokenizer.py: the scanner against `re` (with \p{L}/\p{N} spelled out as
character classes), merges and special tokens on a hand-built vocabulary, round trips, streaming, templates.
"""
from __future__ import annotations
import codecs, heapq, re, sys, time, unicodedata
from typing import Sequence

from common import UserError

# tokenizer.ggml.token_type values (llama.cpp / gguf-py TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.ggml.pre -> (digits per number chunk, ignore_merges, add_bos when the GGUF does not say), as llama.cpp
# reads them; "smaug-bpe"/"dbrx" split like LLaMA-3 but merge every word and add no BOS by default.
PRE_TOKENIZERS = {
  **{name: (3, True, True) for name in ("llama3", "llama-v3", "llama-bpe", "falcon3")},
  **{name: (3, False, False) for name in ("smaug-bpe", "dbrx")},
  **{name: (1, False, False) for name in ("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2")},
}

# Tokens that end a turn, found by their text as llama.cpp does: converters do not always set eot_token_id.
END_OF_TURN_TEXTS = frozenset(("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|end|>",
                               "<end_of_turn>", "<EOT>"))

LLAMA3_CUTOFF = "Cutting Knowledge Date: December 2023"
LLAMA3_DEFAULT_DATE = "26 Jul 2024"        # the date the LLaMA-3.1 template writes when it has no clock


# ---- GPT-2's byte <-> character table ---------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
  """Byte b -> one printable character: the 188 printable Latin-1 bytes map to themselves, the other 68 (control
  bytes, space, 0x7F-0xA0, 0xAD) to U+0100 + n in byte order, so " " -> "Ġ" (U+0120) and "\\n" -> "Ċ"."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  table, moved = {b: chr(b) for b in printable}, 0
  for b in range(256):
    if b not in table:
      table[b], moved = chr(256 + moved), moved + 1
  return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_LATIN1_TO_GPT2 = str.maketrans({chr(b): c for b, c in BYTE_TO_CHAR.items()})   # applied to bytes read as latin-1
_GPT2_TO_LATIN1 = str.maketrans({c: chr(b) for b, c in BYTE_TO_CHAR.items()})


def to_byte_symbols(word: str) -> str:
  """A word's UTF-8 bytes as GPT-2 characters, one character per byte: "é" -> "Ã©"."""
  return word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_LATIN1_TO_GPT2)


def from_byte_symbols(piece: str) -> bytes:
  """Inverse of to_byte_symbols; a character outside the table (not in a byte-level vocabulary) stays as its UTF-8."""
  latin1 = piece.translate(_GPT2_TO_LATIN1)
  try:
    return latin1.encode("latin-1")
  except UnicodeEncodeError:
    return b"".join(bytes([ord(c)]) if ord(c) < 256 else c.encode("utf-8") for c in latin1)


# ---- the pre-tokenizer: LLaMA-3's / Qwen2's split pattern, without \p{..} support --------------

NEWLINE, SPACE, LETTER, NUMBER, OTHER = 1, 2, 3, 4, 5   # \r\n | other \s | \p{L} | \p{N} | everything else
WHITE_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                        "\u2028\u2029\u202f\u205f\u3000")   # Unicode White_Space, the set llama.cpp's \s uses
_CHAR_CLASS: dict[str, int] = {}
_ONE_LETTER = frozenset("sStTmMdD")                                       # 's 't 'm 'd
_TWO_LETTERS = frozenset(a + b for x, y in ("re", "ve", "ll") for a in (x, x.upper()) for b in (y, y.upper()))


def char_class(c: str) -> int:
  kind = _CHAR_CLASS.get(c)
  if kind is None:
    category = unicodedata.category(c)
    kind = (NEWLINE if c in "\r\n" else SPACE if c in WHITE_SPACE else LETTER if category[0] == "L"
            else NUMBER if category[0] == "N" else OTHER)
    _CHAR_CLASS[c] = kind
  return kind


def split_words(text: str, max_digits: int = 3) -> list[str]:
  """Cut text as LLaMA-3's pattern does (max_digits=3; Qwen2's is max_digits=1). The branches below are the
  pattern's alternatives in order; `kinds` holds each character's class. Every character starts some branch, so
  the words cover the text: "".join(split_words(t)) == t."""
  kinds, n = [char_class(c) for c in text], len(text)
  words, i = [], 0
  while i < n:
    kind = kinds[i]
    if text[i] == "'" and i + 1 < n and (text[i + 1] in _ONE_LETTER or text[i + 1:i + 3] in _TWO_LETTERS):
      j = i + 2 if text[i + 1] in _ONE_LETTER else i + 3               # (?i:'s|'t|'re|'ve|'m|'ll|'d)
    elif kind == LETTER or (kind in (SPACE, OTHER) and i + 1 < n and kinds[i + 1] == LETTER):
      j = i + 1                                                         # [^\r\n\p{L}\p{N}]?\p{L}+
      while j < n and kinds[j] == LETTER: j += 1
    elif kind == NUMBER:
      j = i + 1                                                         # \p{N}{1,max_digits}
      while j < n and j - i < max_digits and kinds[j] == NUMBER: j += 1
    elif kind == OTHER or (text[i] == " " and i + 1 < n and kinds[i + 1] == OTHER):
      j = i + 1                                                         #  ?[^\s\p{L}\p{N}]+[\r\n]*
      while j < n and kinds[j] == OTHER: j += 1
      while j < n and kinds[j] == NEWLINE: j += 1
    else:                                                               # whitespace: the last three alternatives
      end, last_newline = i, -1
      while end < n and kinds[end] in (SPACE, NEWLINE):
        if kinds[end] == NEWLINE: last_newline = end
        end += 1
      if last_newline >= 0: j = last_newline + 1                        # \s*[\r\n]+ backtracks to the last newline
      elif end == n: j = n                                              # \s+(?!\S) at the end of the text
      else: j = max(end - 1, i + 1)                                     # \s+(?!\S) gives one back, else \s+ takes one
    words.append(text[i:j])
    i = j
  return words


# ---- BPE --------------------------------------------------------------------------------------

def bpe(symbols: str, merge_rank: dict[str, int]) -> list[str]:
  """Merge adjacent symbols by rank, lowest first, leftmost on ties. merge_rank: "left right" -> rank.
  A heap holds (rank, left index, merged text) for every adjacent pair that has a merge; an entry whose pair has
  changed since it was pushed (its left text grew, or its right neighbour did) no longer spells its merged text
  and is skipped, since a symbol's text only ever grows."""
  parts = list(symbols)
  if len(parts) < 2: return parts
  nxt, prv = [*range(1, len(parts)), -1], [*range(-1, len(parts) - 1)]

  def push(left: int) -> None:
    right = nxt[left] if left >= 0 else -1
    if right >= 0 and (rank := merge_rank.get(parts[left] + " " + parts[right])) is not None:
      heapq.heappush(heap, (rank, left, parts[left] + parts[right]))

  heap: list[tuple[int, int, str]] = []
  for left in range(len(parts) - 1): push(left)
  while heap:
    _, left, merged = heapq.heappop(heap)
    right = nxt[left]
    if right < 0 or not parts[left] or parts[left] + parts[right] != merged: continue
    parts[left], parts[right] = merged, ""
    nxt[left] = nxt[right]
    if nxt[right] >= 0: prv[nxt[right]] = left
    push(prv[left])
    push(left)
  return [p for p in parts if p]


# ---- the tokenizer ----------------------------------------------------------------------------

class Tokenizer:
  """Byte-level BPE tokenizer of a LLaMA-3 / Qwen2 / Qwen3 GGUF. Build it with from_gguf_metadata(meta)."""

  def __init__(self, tokens: list[str], token_types: list[int], merges: Sequence[str], pre: str,
               bos_id: int | None, eos_id: int | None, eot_id: int | None = None, eom_id: int | None = None,
               add_bos: bool | None = None, chat_template: str | None = None):
    self.tokens, self.vocab_size = tokens, len(tokens)
    self.token_to_id = {t: i for i, t in enumerate(tokens)}
    self.merge_rank = {m: r for r, m in enumerate(merges)}
    self.pre = pre
    self.max_digits, self.ignore_merges, add_bos_default = PRE_TOKENIZERS[pre]
    self.bos_id, self.eos_id = bos_id, eos_id
    self.add_bos = add_bos_default if add_bos is None else add_bos
    # end of generation: the GGUF's eos / eot / eom ids and every token whose text ends a turn; such a token is
    # a control token even where the converter forgot to say so (llama.cpp does the same)
    self.token_types = list(token_types)
    self.eos_ids = {i for i in (eos_id, eot_id, eom_id) if i is not None}
    self.eos_ids |= {self.token_to_id[t] for t in END_OF_TURN_TEXTS if t in self.token_to_id}
    for i in self.eos_ids: self.token_types[i] = CONTROL
    # special tokens in the order they are matched: longest first, so "<|im_start|>" wins over a prefix of it
    special = [i for i, t in enumerate(self.token_types) if t in (CONTROL, UNKNOWN, USER_DEFINED) and tokens[i]]
    self.special_ids = sorted(special, key=lambda i: -len(tokens[i]))
    self._word_cache: dict[str, list[int]] = {}
    self._piece_cache: dict[tuple[int, bool], bytes] = {}
    self.chat_template = chat_template
    self.chat_template_name, self.chat_template_note, self._default_system = detect_chat_template(chat_template)
    self._noted_no_template = False

  @classmethod
  def from_gguf_metadata(cls, meta: dict) -> Tokenizer:
    """Check the tokenizer.* keys and build the tokenizer; bad or unsupported metadata -> UserError (one line)."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens) == 0: raise UserError("GGUF has no tokenizer (tokenizer.ggml.tokens missing)")
    tokens = list(tokens)
    if not all(isinstance(t, str) for t in tokens): raise UserError("GGUF tokenizer.ggml.tokens is not a list of strings")
    model = meta.get("tokenizer.ggml.model")
    if model is None: raise UserError("GGUF has no tokenizer.ggml.model (the tokenizer type)")
    if model != "gpt2":
      kind = {"llama": "SentencePiece", "bert": "WordPiece", "t5": "Unigram", "rwkv": "RWKV"}.get(model, "unknown")
      raise UserError(f"GGUF tokenizer.ggml.model {model!r} ({kind}) is not supported: only 'gpt2' (byte-level BPE: LLaMA-3, Qwen2/3)")
    merges = meta.get("tokenizer.ggml.merges")
    if merges is None or len(merges) == 0: raise UserError("GGUF tokenizer 'gpt2' has no merges (tokenizer.ggml.merges missing)")
    merges = list(merges)
    bad = next((k for k, m in enumerate(merges) if not isinstance(m, str) or " " not in m), None)
    if bad is not None: raise UserError(f"GGUF tokenizer.ggml.merges[{bad}] is {merges[bad]!r}, not a 'left right' pair")
    types = meta.get("tokenizer.ggml.token_type")
    types = [NORMAL] * len(tokens) if types is None else [int(t) for t in types]
    if len(types) != len(tokens):
      raise UserError(f"GGUF tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    pre = meta.get("tokenizer.ggml.pre")
    if pre is None or pre == "default":
      # llama.cpp falls back to a GPT-2-like split here and warns that quality degrades; GGUFs without the key are
      # LLaMA-3s converted before it existed, so their own split is the better guess
      print(f"note: GGUF tokenizer.ggml.pre is {pre!r}; splitting text as LLaMA-3 does (llama-bpe)", file=sys.stderr)
      pre = "llama-bpe"
    if pre not in PRE_TOKENIZERS:
      raise UserError(f"GGUF tokenizer.ggml.pre {pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")

    def token_id(key: str) -> int | None:
      value = meta.get(key)
      if value is None: return None
      if isinstance(value, (str, bytes, float)) or not hasattr(value, "__index__"): raise UserError(f"GGUF {key} = {value!r} is not an integer")
      if not 0 <= int(value) < len(tokens): raise UserError(f"GGUF {key} = {value} is outside the vocabulary (0..{len(tokens) - 1})")
      return int(value)

    ids = {k: token_id(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "eot", "eom")}
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    add_bos = None if add_bos is None else bool(add_bos)
    if ids["bos"] is None and (add_bos or (add_bos is None and PRE_TOKENIZERS[pre][2])):
      raise UserError("GGUF tokenizer adds a BOS token but has no tokenizer.ggml.bos_token_id")
    return cls(tokens, types, merges, pre, ids["bos"], ids["eos"], ids["eot"], ids["eom"], add_bos,
               meta.get("tokenizer.chat_template"))

  # ---- encode ----

  def encode(self, text: str, add_bos: bool | None = None, parse_special: bool = True) -> list[int]:
    """Text -> ids: special tokens, then split_words, then BPE per word. add_bos None: as the model wants."""
    ids = [self.bos_id] if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None else []
    for fragment in self._split_special(text, parse_special):
      if isinstance(fragment, int): ids.append(fragment)
      else:
        for word in split_words(fragment, self.max_digits): ids.extend(self._word_ids(word))
    return ids

  def _split_special(self, text: str, parse_special: bool) -> list[str | int]:
    """Text -> a list of plain-text pieces and special-token ids, each special token cut out wherever it occurs,
    longest tokens first. Control tokens only with parse_special; user-defined ones always."""
    fragments: list[str | int] = [text]
    for tid in self.special_ids:
      token = self.tokens[tid]
      if token not in text or (not parse_special and self.token_types[tid] != USER_DEFINED): continue
      cut: list[str | int] = []
      for fragment in fragments:
        if isinstance(fragment, int) or token not in fragment:
          cut.append(fragment)
          continue
        for k, piece in enumerate(fragment.split(token)):
          if k: cut.append(tid)
          if piece: cut.append(piece)
      fragments = cut
    return fragments

  def _word_ids(self, word: str) -> list[int]:
    ids = self._word_cache.get(word)
    if ids is None:
      symbols = to_byte_symbols(word)
      if self.ignore_merges and symbols in self.token_to_id: ids = [self.token_to_id[symbols]]
      else:
        ids = []
        for piece in bpe(symbols, self.merge_rank):
          if piece in self.token_to_id: ids.append(self.token_to_id[piece])
          # a merge whose result the vocabulary lacks: its bytes one by one (llama.cpp drops a byte it has no token for)
          else: ids.extend(self.token_to_id[c] for c in piece if c in self.token_to_id)
      if len(self._word_cache) > 100_000: self._word_cache.clear()    # bound the memory of a long session
      self._word_cache[word] = ids
    return ids

  # ---- decode ----

  def piece_bytes(self, token_id: int, special: bool = False) -> bytes:
    """One token's bytes. Normal tokens are GPT-2 characters mapped back to bytes; user-defined tokens are their
    text; control tokens are their text only when special is set (otherwise nothing, like llama.cpp's output)."""
    key = (token_id, special)
    piece = self._piece_cache.get(key)
    if piece is None:
      if not 0 <= token_id < self.vocab_size: raise ValueError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
      text, kind = self.tokens[token_id], self.token_types[token_id]
      if kind == NORMAL: piece = from_byte_symbols(text)
      elif kind == USER_DEFINED or (special and kind in (CONTROL, UNKNOWN)): piece = text.encode("utf-8")
      elif kind == BYTE and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text): piece = bytes([int(text[3:5], 16)])
      else: piece = b""
      self._piece_cache[key] = piece
    return piece

  def decode(self, ids: Sequence[int], special: bool = False) -> str:
    """Ids -> text; bytes that are not valid UTF-8 (a character cut at the end) become U+FFFD."""
    return b"".join(self.piece_bytes(int(i), special) for i in ids).decode("utf-8", errors="replace")

  def decode_stream(self, special: bool = False) -> StreamDecoder:
    """A callable f(id) -> the text that id completes: "" while a multi-byte character is still partial."""
    return StreamDecoder(self, special)

  # ---- chat ----

  def chat_prompt(self, user: str, system: str | None = None, date: str | None = None) -> str:
    """The text of a one-turn chat ending where the assistant's reply begins, as the GGUF's template writes it.
    The BOS token is not in the text: encode() adds it when the model wants one. date: LLaMA-3.1+'s "Today Date"
    (default: today where the template reads the clock, else the template's fixed date)."""
    if self.chat_template_name == "llama3":
      def turn(role: str, content: str) -> str: return f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
      prompt = ""                                                       # the template trims each message (| trim)
      if LLAMA3_CUTOFF in self.chat_template:
        if date is None: date = time.strftime("%d %b %Y") if "strftime_now" in self.chat_template else LLAMA3_DEFAULT_DATE
        prompt += turn("system", f"{LLAMA3_CUTOFF}\nToday Date: {date}\n\n{(system or '').strip()}")
      elif system is not None:
        prompt += turn("system", system.strip())
      return prompt + turn("user", user.strip()) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    if self.chat_template_name == "chatml":
      system = self._default_system if system is None else system
      prompt = "" if system is None else f"<|im_start|>system\n{system}<|im_end|>\n"
      return prompt + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    if not self._noted_no_template:
      print(f"note: {self.chat_template_note}; the prompt is the user text as it is", file=sys.stderr)
      self._noted_no_template = True
    return user


# --- plumbing: which chat template a GGUF carries, and text that streams out whole -------------

def detect_chat_template(template: str | None) -> tuple[str, str, str | None]:
  """-> (name, one-line note, default system message). Recognised by the tokens the template writes."""
  if not template: return "none", "GGUF has no tokenizer.chat_template", None
  if "<|start_header_id|>" in template: return "llama3", "LLaMA-3 header template", None
  if "<|im_start|>" in template:
    # Qwen2/2.5 write a fixed system turn when the conversation has none: '<|im_start|>system\nYou are ...<|im_end|>'
    default = re.search(r"<\|im_start\|>system(?:\\n|\n)([^'\"{}<]+?)<\|im_end\|>", template)
    return "chatml", "ChatML template", default.group(1) if default else None
  return "none", "chat template not recognised (neither LLaMA-3 headers nor ChatML)", None


class StreamDecoder:
  """Streaming decode: feed ids one at a time, get only text whose UTF-8 is complete. An incremental UTF-8
  decoder keeps the unfinished tail of a character (at most 3 bytes) until the next token completes it."""

  def __init__(self, tokenizer: Tokenizer, special: bool = False):
    self.tokenizer, self.special = tokenizer, special
    self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

  def __call__(self, token_id: int) -> str:
    return self._utf8.decode(self.tokenizer.piece_bytes(int(token_id), self.special))

  def flush(self) -> str:
    """At the end of generation: a character left unfinished comes out as U+FFFD."""
    return self._utf8.decode(b"", final=True)
