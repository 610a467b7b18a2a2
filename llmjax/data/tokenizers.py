"""BERT-style WordPiece tokenizer built from a `vocab.txt`.

The tokenizer reproduces Hugging Face's `BertTokenizerFast` for a BERT vocabulary (same normalizer,
pre-tokenizer and `[CLS] a [SEP] (b [SEP])` template), so ids match the checkpoints we load. It
truncates to `max_len` but never pads: the input pipeline pads each batch to a bucket length.
"""

import os
import pathlib

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors

from llmjax.errors import UserError

PAD = '[PAD]'
UNK = '[UNK]'
CLS = '[CLS]'
SEP = '[SEP]'
MASK = '[MASK]'


def wordpiece(vocab_path: str | os.PathLike, *, lowercase: bool = True,
              max_len: int) -> tokenizers.Tokenizer:
  """Returns a BERT WordPiece tokenizer for `vocab_path` (one token per line, id = line number).

  Encodings are `[CLS] a [SEP]` (token type 0) or `[CLS] a [SEP] b [SEP]` (b has token type 1),
  truncated to `max_len` tokens including the special ones; pairs drop tokens from the longer
  text first. No padding.

  Args:
    vocab_path: a `vocab.txt` file (resolve `asset:` specs with `llmjax.assets.resolve`).
    lowercase: lowercase and strip accents, as uncased BERT checkpoints expect.
    max_len: the longest encoding returned, special tokens included.
  """
  path = pathlib.Path(vocab_path).expanduser()
  if not path.is_file():
    raise UserError(f'vocabulary file not found: {path}: point config.tokenizer.vocab at a '
                    'vocab.txt, e.g. asset:all-MiniLM-L6-v2/vocab.txt')
  if max_len < 3:
    # A pair needs room for [CLS] x [SEP] y [SEP]; anything shorter cannot hold a real token.
    raise UserError(f'max_len={max_len} is too short for [CLS] ... [SEP]: use max_len >= 3')
  vocab = models.WordPiece.read_file(str(path))
  missing = [t for t in (PAD, UNK, CLS, SEP) if t not in vocab]
  if missing:
    raise UserError(f'vocabulary {path} lacks the special tokens {missing}: use a BERT vocab.txt '
                    'that contains [PAD], [UNK], [CLS] and [SEP]')

  tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
  # Registering the special tokens keeps the normalizer from splitting or lowercasing them when
  # they appear literally in text (same as BertTokenizerFast).
  tok.add_special_tokens([t for t in (PAD, UNK, CLS, SEP, MASK) if t in vocab])
  # strip_accents=None follows `lowercase`, which is what uncased BERT vocabularies were built with.
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=None, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.BertProcessing((SEP, vocab[SEP]), (CLS, vocab[CLS]))
  tok.decoder = decoders.WordPiece(prefix='##')
  # The truncation budget counts the special tokens the post-processor adds.
  tok.enable_truncation(max_length=max_len, strategy='longest_first')
  tok.no_padding()
  return tok
