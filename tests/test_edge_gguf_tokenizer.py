"""edge-deploy/gguf_tokenizer.py: the pre-tokenizer scanner against Python's `re` running the same pattern (with
\\p{L} and \\p{N} spelled out as character classes over the test's alphabet), BPE ids on a hand-built vocabulary
(the 256 byte tokens, a dozen merges, LLaMA-3 / ChatML special tokens), round trips, streaming, chat prompts, and
one-line errors for bad metadata. CPU only, no files, about a second."""
import random, re, sys, time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge-deploy"))
import gguf_tokenizer as gt  # noqa: E402
from gguf_tokenizer import Tokenizer, split_words  # noqa: E402
from common import UserError  # noqa: E402

# ---- the test vocabulary: id b is byte b (as its GPT-2 character), then merges, then special tokens -----------

MERGES = ["h e", "l l", "he ll", "hell o", "Ġ t", "Ġt he", "b c", "a b", "a a", "Ġ Ġ", "1 2", "12 3"]
EXTRA = [("<|begin_of_text|>", gt.CONTROL), ("<|end_of_text|>", gt.CONTROL), ("<|eot_id|>", gt.CONTROL),
         ("<|eot", gt.CONTROL), ("<|im_start|>", gt.CONTROL), ("<|im_end|>", gt.CONTROL), ("<think>", gt.USER_DEFINED),
         ("xyz", gt.NORMAL)]
TOKENS = [gt.BYTE_TO_CHAR[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES] + [t for t, _ in EXTRA]
TYPES = [gt.NORMAL] * (256 + len(MERGES)) + [k for _, k in EXTRA]
# ids: 256 he, 257 ll, 258 hell, 259 hello, 260 Ġt, 261 Ġthe, 262 bc, 263 ab, 264 aa, 265 ĠĠ, 266 12, 267 123,
#      268 <|begin_of_text|>, 269 <|end_of_text|>, 270 <|eot_id|>, 271 <|eot, 272 <|im_start|>, 273 <|im_end|>,
#      274 <think> (user-defined), 275 xyz (in the vocabulary, but no merge builds it)
BOS, EOS, EOT, IM_START, IM_END, THINK, XYZ = 268, 269, 270, 272, 273, 274, 275
DROP = object()


def metadata(pre="llama-bpe", **keys) -> dict:
  """GGUF-style metadata for the test vocabulary; keys: short name -> value (DROP removes the key)."""
  meta = {"model": "gpt2", "pre": pre, "tokens": TOKENS, "token_type": TYPES, "merges": MERGES, "bos_token_id": BOS,
          "eos_token_id": EOS, **keys}
  return {(k if k.startswith("tokenizer.") else f"tokenizer.ggml.{k}"): v for k, v in meta.items() if v is not DROP}


@pytest.fixture(scope="module")
def llama() -> Tokenizer: return Tokenizer.from_gguf_metadata(metadata("llama-bpe"))


@pytest.fixture(scope="module")
def qwen() -> Tokenizer: return Tokenizer.from_gguf_metadata(metadata("qwen2"))


# ---- the pre-tokenizer ------------------------------------------------------------------------

def pattern(letter: str, number: str, digits: str) -> re.Pattern:
  """LLaMA-3's split pattern (digits "{1,3}"; Qwen2: "") with \\p{L} and \\p{N} replaced by the given classes."""
  L, N = letter, number
  return re.compile(rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n{L}{N}]?[{L}]+|[{N}]{digits}| ?[^\s{L}{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def random_strings(alphabet: str, count: int, seed: int):
  rng = random.Random(seed)
  for _ in range(count): yield "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))


@pytest.mark.parametrize("max_digits,digits", [(3, "{1,3}"), (1, "")])
def test_split_words_matches_re_on_ascii(max_digits, digits):
  # letters that contractions use, other letters, digits, ASCII whitespace, apostrophes, symbols (not \x1c-\x1f:
  # Python's \s counts them as space, Unicode White_Space and llama.cpp do not)
  alphabet = "sStTrReEvVmMlLdDxQ019 '  \t\n\r\x0b\x0c.,!-_(\"'"
  regex = pattern("A-Za-z", "0-9", digits)
  for text in random_strings(alphabet, 4000, seed=max_digits):
    assert split_words(text, max_digits) == regex.findall(text), repr(text)


@pytest.mark.parametrize("max_digits,digits", [(3, "{1,3}"), (1, "")])
def test_split_words_matches_re_on_unicode(max_digits, digits):
  # the same test over non-ASCII letters (Ll, Lo), numbers (Nd, No), Unicode spaces, a combining mark and an emoji;
  # `re` gets this alphabet's letters and numbers as explicit classes, its own \s covers the spaces
  letters, numbers = "aséÉ日本ß", "7٣²"
  alphabet = letters + numbers + " \u00a0\u3000\u2009\n\r\t'.\u0301👋—"
  regex = pattern(letters, numbers, digits)
  for text in random_strings(alphabet, 3000, seed=10 + max_digits):
    assert split_words(text, max_digits) == regex.findall(text), repr(text)


@pytest.mark.parametrize("text,words", [
  ("Hello world", ["Hello", " world"]),
  ("a   b", ["a", "  ", " b"]),                       # \s+(?!\S): the run gives its last space to the word
  ("x  \n\n y", ["x", "  \n\n", " y"]),               # \s*[\r\n]+ stops after the last newline
  ("end.\n\nnext", ["end", ".\n\n", "next"]),         # symbols take the newlines that follow them
  ("trailing   ", ["trailing", "   "]),
  ("12345", ["123", "45"]),
  ("don't DON'T 'hello", ["don", "'t", " DON", "'T", " '", "hello"]),
  ("café au lait", ["café", " au", " lait"]),
  ("日本語のテキスト", ["日本語のテキスト"]),
  ("hi 👋 there!", ["hi", " 👋", " there", "!"]),
  ("x²٣٤٥", ["x", "²٣٤", "٥"]),                       # No and Nd count as \p{N}
  ("a\u00a0b", ["a", "\u00a0b"]),                     # a no-break space is \s, and may lead a word
  ("e\u0301!", ["e", "\u0301!"]),                     # a combining mark is neither letter nor number
  ("", []),
])
def test_split_words_hand_cases(text, words):
  assert split_words(text, 3) == words
  assert "".join(split_words(text, 1)) == text


def test_qwen_splits_digits_one_by_one():
  assert split_words("ab 2024!", 1) == ["ab", " ", "2", "0", "2", "4", "!"]
  assert split_words("ab 2024!", 3) == ["ab", " ", "202", "4", "!"]


# ---- byte table and BPE ids -------------------------------------------------------------------

def test_gpt2_byte_table():
  assert len(set(gt.BYTE_TO_CHAR.values())) == 256
  assert (gt.BYTE_TO_CHAR[ord(" ")], gt.BYTE_TO_CHAR[ord("\n")], gt.BYTE_TO_CHAR[0], gt.BYTE_TO_CHAR[0x7F]) == ("Ġ", "Ċ", "Ā", "ġ")
  assert gt.BYTE_TO_CHAR[ord("A")] == "A" and gt.BYTE_TO_CHAR[0xE9] == "é"
  assert gt.to_byte_symbols("é") == "Ã©" and gt.from_byte_symbols("Ã©") == "é".encode()


def test_bpe_merges_by_rank_leftmost_first():
  ranks = {m: r for r, m in enumerate(MERGES)}
  assert gt.bpe("Ġhello", ranks) == ["Ġ", "hello"]
  assert gt.bpe("abc", ranks) == ["a", "bc"]       # "b c" (rank 6) before "a b" (rank 7)
  assert gt.bpe("aaa", ranks) == ["aa", "a"]       # the leftmost "a a" first
  assert gt.bpe("aaaa", ranks) == ["aa", "aa"]


def test_encode_ids(llama, qwen):
  for tok in (llama, qwen):
    assert tok.encode("hello the", add_bos=False) == [259, 261]
    assert tok.encode("  hello", add_bos=False) == [32, 32, 259]    # " " then " hello" (no merge "Ġ hello")
    assert tok.encode("a   b", add_bos=False) == [97, 265, 32, 98]  # "a", "ĠĠ", then "Ġ" "b"
    assert tok.encode("abc aaa", add_bos=False) == [97, 262, 32, 264, 97]
    assert tok.encode("é", add_bos=False) == [0xC3, 0xA9]           # no merge: one token per UTF-8 byte
  assert llama.encode("12345", add_bos=False) == [267, 52, 53]       # "123" "45"
  assert qwen.encode("12345", add_bos=False) == [49, 50, 51, 52, 53]


def test_llama3_takes_a_word_the_vocabulary_has_whole(llama, qwen):
  # llama.cpp's ignore_merges for llama-bpe: "xyz" is a token, though no merge builds it
  assert llama.encode("xyz", add_bos=False) == [XYZ]
  assert qwen.encode("xyz", add_bos=False) == [120, 121, 122]


def test_add_bos_defaults():
  assert Tokenizer.from_gguf_metadata(metadata("llama-bpe")).encode("hello") == [BOS, 259]
  assert Tokenizer.from_gguf_metadata(metadata("qwen2")).encode("hello") == [259]
  assert Tokenizer.from_gguf_metadata(metadata("llama-bpe", add_bos_token=False)).encode("hello") == [259]
  assert Tokenizer.from_gguf_metadata(metadata("qwen2", add_bos_token=True)).encode("hello") == [BOS, 259]
  assert Tokenizer.from_gguf_metadata(metadata("qwen2")).encode("hello", add_bos=True) == [BOS, 259]


def test_special_tokens(llama, qwen):
  assert llama.encode("<|begin_of_text|>hello<|eot_id|>", add_bos=False) == [BOS, 259, EOT]   # not "<|eot" + "_id|>"
  assert qwen.encode("<|im_start|>user\nhello<|im_end|>\n") == [IM_START, 117, 115, 101, 114, 10, 259, IM_END, 10]
  assert llama.encode("<|eot", add_bos=False) == [271]
  # without parse_special a control token is plain text (BPE'd byte by byte here), a user-defined one still a token
  plain = llama.encode("<|eot_id|><think>", add_bos=False, parse_special=False)
  assert EOT not in plain and plain[-1] == THINK and llama.decode(plain) == "<|eot_id|><think>"
  assert llama.eos_ids == {EOS, EOT, IM_END} and llama.bos_id == BOS and llama.vocab_size == 276
  assert Tokenizer.from_gguf_metadata(metadata(eot_token_id=271)).eos_ids == {EOS, EOT, IM_END, 271}


# ---- decode -----------------------------------------------------------------------------------

ROUND_TRIP = ["hello the world", "Café, naïve, Ångström", "日本語のテキスト、中文", "emoji 👋🏽 and 🇫🇷!",
              "line one\nline two\r\n\n  indented\ttab", "many     spaces   ", "don't 1234567 ²³", "", " ", "\n\n"]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(llama, qwen, text):
  for tok in (llama, qwen):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
  assert llama.encode(text)[:1] == [BOS]


def test_decode_control_tokens_only_when_asked(llama):
  ids = llama.encode("hello<|eot_id|>")
  assert ids == [BOS, 259, EOT]
  assert llama.decode(ids) == "hello"
  assert llama.decode(ids, special=True) == "<|begin_of_text|>hello<|eot_id|>"
  assert llama.decode([0xE6, 0x97]) == "\ufffd"                      # a character cut short
  with pytest.raises(ValueError): llama.decode([9999])


def test_decode_stream_never_emits_a_broken_character(llama):
  text = "héllo 日本 👋🏽 ok"
  ids = llama.encode(text, add_bos=False)
  emit = llama.decode_stream()
  pieces = [emit(i) for i in ids]
  assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
  first_of_japan = ids.index(0xE6)                                   # 日 = E6 97 A5: one byte token each
  assert pieces[first_of_japan:first_of_japan + 3] == ["", "", "日"]
  assert emit.flush() == ""
  broken = llama.decode_stream()
  assert broken(0xE6) == "" and broken.flush() == "\ufffd"


# ---- chat prompts -----------------------------------------------------------------------------

LLAMA31_TEMPLATE = ('{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}'
                    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Cutting Knowledge Date: December 2023\\n" }}'
                    '{{- "Today Date: " + date_string + "\\n\\n" }}{{- system_message }}{{- "<|eot_id|>" }}')
LLAMA30_TEMPLATE = ("{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                    "+ message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}")
QWEN25_TEMPLATE = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
                   "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
                   "{%- endif %}")
QWEN3_TEMPLATE = ("{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
                  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
HEADER = "<|start_header_id|>{}<|end_header_id|>\n\n"


def chat(template, pre="llama-bpe") -> Tokenizer:
  return Tokenizer.from_gguf_metadata(metadata(pre, **{"tokenizer.chat_template": template}))


def test_llama3_chat_prompts():
  tok = chat(LLAMA31_TEMPLATE)
  assert tok.chat_template_name == "llama3"
  assert tok.chat_prompt(" Hi there \n") == (HEADER.format("system") + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                                             "<|eot_id|>" + HEADER.format("user") + "Hi there<|eot_id|>" + HEADER.format("assistant"))
  assert "Today Date: 01 Jan 2025\n\nBe brief.<|eot_id|>" in tok.chat_prompt("Hi", system="Be brief.", date="01 Jan 2025")
  assert "Today Date: " + time.strftime("%d %b %Y") in chat(LLAMA31_TEMPLATE + "{{ strftime_now('%d %b %Y') }}").chat_prompt("Hi")
  old = chat(LLAMA30_TEMPLATE)
  assert old.chat_prompt("Hi") == HEADER.format("user") + "Hi<|eot_id|>" + HEADER.format("assistant")
  assert old.chat_prompt("Hi", system="Sys").startswith(HEADER.format("system") + "Sys<|eot_id|>" + HEADER.format("user"))
  ids = old.encode(old.chat_prompt("hello"))                          # header tokens are parsed as special tokens
  assert ids[0] == BOS and ids[-1] == 10 and EOT in ids


def test_chatml_chat_prompts():
  qwen25 = chat(QWEN25_TEMPLATE, "qwen2")
  assert qwen25.chat_template_name == "chatml"
  assert qwen25.chat_prompt("Hi") == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                                      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  assert qwen25.chat_prompt("Hi", system="S").startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n")
  qwen3 = chat(QWEN3_TEMPLATE, "qwen2")
  assert qwen3.chat_prompt("Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  ids = qwen3.encode(qwen3.chat_prompt("hello"))
  assert ids[0] == IM_START and ids.count(IM_START) == 2 and IM_END in ids and BOS not in ids


def test_unknown_or_missing_template_passes_the_text_through(capsys):
  for template in (None, "{{ messages[0]['content'] }}"):
    tok = chat(template)
    assert tok.chat_template_name == "none"
    assert tok.chat_prompt("just this") == "just this" and tok.chat_prompt("again") == "again"
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith("note:")           # said once, on one line


# ---- bad metadata -----------------------------------------------------------------------------

@pytest.mark.parametrize("keys,fragment", [
  ({"tokens": DROP}, "tokenizer.ggml.tokens missing"),
  ({"tokens": []}, "tokenizer.ggml.tokens missing"),
  ({"tokens": [1, 2, 3], "token_type": DROP}, "not a list of strings"),
  ({"model": "llama"}, "'llama' (SentencePiece) is not supported"),
  ({"model": "bert"}, "'bert' (WordPiece) is not supported"),
  ({"model": DROP}, "no tokenizer.ggml.model"),
  ({"merges": DROP}, "tokenizer.ggml.merges missing"),
  ({"merges": ["h e", "he"]}, "merges[1]"),
  ({"token_type": TYPES[:10]}, "10 entries for 276 tokens"),
  ({"pre": "tekken"}, "'tekken' is not supported"),
  ({"bos_token_id": 9999}, "bos_token_id = 9999 is outside the vocabulary"),
  ({"bos_token_id": DROP}, "no tokenizer.ggml.bos_token_id"),
  ({"eos_token_id": "2"}, "eos_token_id = '2' is not an integer"),
])
def test_bad_metadata_is_one_line(keys, fragment):
  with pytest.raises(UserError) as e: Tokenizer.from_gguf_metadata(metadata(**keys))
  assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_missing_pre_tokenizer_splits_like_llama3(capsys):
  tok = Tokenizer.from_gguf_metadata(metadata(pre=DROP))
  assert tok.encode("12345", add_bos=False) == [267, 52, 53]
  assert "tokenizer.ggml.pre" in capsys.readouterr().err
  assert Tokenizer.from_gguf_metadata(metadata(pre=DROP, bos_token_id=DROP, add_bos_token=False)).bos_id is None


# ---- speed on a vocabulary of LLaMA-3's size --------------------------------------------------

def test_paragraph_encodes_fast_on_a_128k_vocabulary():
  """128 256 tokens and 280 000 merges: a merge chain spelling every word of a paragraph (with and without its
  leading space), padded with tokens and merges the text never uses. A fresh tokenizer (empty cache)."""
  paragraph = ("Byte-level BPE reads a paragraph as bytes, splits it into words, and merges each word's bytes by rank "
               "until no merge applies; the whole 128k vocabulary only matters through the merge table. ") * 6
  merges, tokens = [], [gt.BYTE_TO_CHAR[b] for b in range(256)]
  for word in dict.fromkeys(split_words(paragraph)):
    symbols = gt.to_byte_symbols(word)
    for k in range(1, len(symbols)):
      merges.append(f"{symbols[:k]} {symbols[k]}")
      tokens.append(symbols[:k + 1])
  merges, tokens = list(dict.fromkeys(merges)), list(dict.fromkeys(tokens))
  tokens += [f"<unused{i}>" for i in range(128_256 - len(tokens))]
  merges += [f"<unused{i}> q" for i in range(280_000 - len(merges))]
  meta = metadata("qwen2", tokens=tokens, token_type=[gt.NORMAL] * len(tokens), merges=merges, bos_token_id=DROP, eos_token_id=DROP)
  tok = Tokenizer.from_gguf_metadata(meta)
  start = time.perf_counter()
  ids = tok.encode(paragraph)
  elapsed = time.perf_counter() - start
  # the merge chains of different words cross (" b"+"y" against "b"+"y"), so not every word ends as one token
  assert tok.decode(ids) == paragraph and len(ids) < len(paragraph.encode()) / 3
  assert elapsed < 0.5, f"{elapsed:.3f} s for {len(paragraph)} characters"
