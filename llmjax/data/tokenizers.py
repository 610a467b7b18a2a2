"""Tokenizers: BERT WordPiece, GPT-2 byte-level BPE and SentencePiece (load and train).

* `wordpiece` reproduces Hugging Face's `BertTokenizerFast` for a BERT vocabulary (same normalizer,
  pre-tokenizer and `[CLS] a [SEP] (b [SEP])` template), so ids match the checkpoints we load. It
  truncates to `max_len` but never pads: the input pipeline pads each batch to a bucket length.
* `gpt2_bpe` is GPT-2's byte-level BPE (50,257 tokens, `<|endoftext|>` = 50256) from its
  `vocab.json` / `merges.txt` (the `gpt2-bpe` asset: `encoder.json`, `vocab.bpe`).
* `sentencepiece` loads a SentencePiece model; `train_sentencepiece` trains one with T5's special
  ids: pad=0, eos=1, unk=2 and no bos (see `llmjax.data.spm_train` for the cached command).
"""

from collections.abc import Callable, Iterable, Sequence
import dataclasses
import os
import pathlib
import tempfile

import ml_collections
import sentencepiece as spm
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


EOT = '<|endoftext|>'
# T5's SentencePiece layout: T5 models (and their pipelines) assume these ids, and pad=0 lets
# zero-filled arrays read as padding. There is no bos: T5 and GPT-style LMs never use one.
SPM_PAD_ID, SPM_EOS_ID, SPM_UNK_ID = 0, 1, 2
SPM_MODEL_TYPES = ('unigram', 'bpe')


def gpt2_bpe(encoder_json: str | os.PathLike, merges: str | os.PathLike) -> tokenizers.Tokenizer:
  """Returns GPT-2's byte-level BPE tokenizer from its vocab (`encoder.json`) and merges files.

  As GPT-2: no normalization, no prefix space, no special tokens added to the encoding; the only
  special token is `<|endoftext|>` (registered so it is never split when it appears in text).
  `Hello world` -> [15496, 995] with the real vocabulary.
  """
  paths = [pathlib.Path(p).expanduser() for p in (encoder_json, merges)]
  for path in paths:
    if not path.is_file():
      raise UserError(f'GPT-2 BPE file not found: {path}: point the tokenizer at '
                      'asset:gpt2-bpe/encoder.json and asset:gpt2-bpe/vocab.bpe')
  vocab, merge_list = models.BPE.read_file(str(paths[0]), str(paths[1]))
  if EOT not in vocab:
    raise UserError(f'{paths[0]} has no {EOT} token: use a GPT-2 vocab.json (encoder.json)')
  tok = tokenizers.Tokenizer(models.BPE(vocab, merge_list))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  # trim_offsets only fixes the reported character offsets; ids are unaffected.
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  tok.add_special_tokens([EOT])
  return tok


def sentencepiece(model_path: str | os.PathLike) -> spm.SentencePieceProcessor:
  """Loads a SentencePiece `.model` file (e.g. one written by `train_sentencepiece`)."""
  path = pathlib.Path(model_path).expanduser()
  if not path.is_file():
    raise UserError(f'SentencePiece model not found: {path}: train one with '
                    '`python -m llmjax.data.spm_train --corpus=enwiki_sample` or fix the path')
  try:
    return spm.SentencePieceProcessor(model_file=str(path))
  except (RuntimeError, OSError) as e:
    raise UserError(f'{path} is not a SentencePiece model ({e}): retrain it with '
                    'python -m llmjax.data.spm_train') from e


def train_sentencepiece(texts: Iterable[str], vocab_size: int, model_type: str,
                        out_prefix: str | os.PathLike) -> pathlib.Path:
  """Trains a SentencePiece model on `texts` and returns the path `<out_prefix>.model`.

  Each text (a document) is fed to the trainer one non-empty line at a time, since SentencePiece
  treats its input as sentences and skips any longer than `max_sentence_length`. Specials follow
  T5: pad=0, eos=1, unk=2, no bos. The `.model` and `.vocab` files appear together, and only once
  training has succeeded (they are written under a temporary name and renamed), so an interrupted
  run never leaves a model that looks complete.

  Args:
    texts: documents of plain text.
    vocab_size: the number of pieces, specials included.
    model_type: 'unigram' (T5's choice) or 'bpe'.
    out_prefix: where to write `<out_prefix>.model` and `<out_prefix>.vocab`.
  """
  if model_type not in SPM_MODEL_TYPES:
    raise UserError(f'model_type={model_type!r} is not supported: use one of {SPM_MODEL_TYPES}')
  if vocab_size < 8:
    raise UserError(f'vocab_size={vocab_size} is too small: use at least 8 (3 are specials)')
  out_prefix = pathlib.Path(out_prefix).expanduser()
  out_prefix.parent.mkdir(parents=True, exist_ok=True)

  def lines():
    for text in texts:
      for line in text.splitlines():
        if line.strip():
          yield line

  with tempfile.TemporaryDirectory(dir=out_prefix.parent, prefix='.spm-train-') as tmp:
    tmp_prefix = pathlib.Path(tmp) / 'model'
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=lines(), model_prefix=str(tmp_prefix), vocab_size=vocab_size,
          model_type=model_type, pad_id=SPM_PAD_ID, eos_id=SPM_EOS_ID, unk_id=SPM_UNK_ID,
          bos_id=-1,
          # Wikipedia paragraphs run past the 4,192-byte default; longer ones are still skipped.
          max_sentence_length=16384,
          # Rare characters become <unk> rather than taking pieces from real words (the
          # SentencePiece default, which T5 also used for its English vocabulary).
          character_coverage=0.9995,
          num_threads=os.cpu_count() or 1, minloglevel=2)
    except RuntimeError as e:
      # E.g. "Vocabulary size is too high": the corpus cannot fill vocab_size pieces.
      cause = (str(e).strip().splitlines() or [''])[-1][:300]
      raise UserError(f'SentencePiece training failed ({cause}): use a smaller vocab_size or a '
                      'larger corpus') from e
    for suffix in ('.vocab', '.model'):  # .model last: its presence means both are complete
      os.replace(tmp_prefix.with_suffix(suffix), out_prefix.with_name(out_prefix.name + suffix))
  return out_prefix.with_name(out_prefix.name + '.model')


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
  """Text <-> ids for language modelling, whatever library is underneath."""
  encode: Callable[[str], list[int]]  # No end-of-document token appended.
  decode: Callable[[Sequence[int]], str]
  eos_id: int
  vocab_size: int
  # Optional: many texts -> the ids `encode` gives each, in one call the library runs in native
  # code (in parallel where it can) without a Python call per text.
  encode_batch: Callable[[Sequence[str]], list[list[int]]] | None = None

  def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
    """[encode(t) for t in texts], in one call where the library has one."""
    if self.encode_batch is None:
      return [self.encode(text) for text in texts]
    return self.encode_batch(list(texts))


def text_tokenizer(config: ml_collections.ConfigDict) -> TextTokenizer:
  """The tokenizer `config.tokenizer` names (gpt2_bpe or sentencepiece), resolving its files.

  For sentencepiece, `vocab` may be 'spm:CORPUS:VOCAB_SIZE[:TYPE]': a model trained on the corpus's
  train split on first use and cached (see `llmjax.data.spm_train`).
  """
  from llmjax import assets  # pylint: disable=g-import-not-at-top
  from llmjax.data import spm_train  # pylint: disable=g-import-not-at-top  (it imports this module)
  tok = config.tokenizer
  if tok.kind == 'gpt2_bpe':
    bpe = gpt2_bpe(assets.resolve(tok.vocab), assets.resolve(tok.merges))
    # encode_batch_fast: the same ids as encode, without the character offsets nobody reads here.
    return TextTokenizer(lambda text: bpe.encode(text).ids, bpe.decode, bpe.token_to_id(EOT),
                         bpe.get_vocab_size(),
                         lambda texts: [e.ids for e in bpe.encode_batch_fast(texts)])
  if tok.kind == 'sentencepiece':
    if tok.vocab.startswith('spm:'):
      corpus, size, *kind = tok.vocab[len('spm:'):].split(':')
      # Trained on what the task reads: a translation's two sides share one vocabulary.
      from llmjax.data import translation as translation_lib  # pylint: disable=g-import-not-at-top
      translation = config.get('task') and config.task.name in translation_lib.PAIR_TASKS
      text_key = (','.join(config.data.text_keys) if translation
                  else config.data.get('text_key', 'text'))
      path = spm_train.train_cached(corpus, int(size), *kind, text_key=text_key,
                                    data_dir=config.data.data_dir)
    else:
      path = assets.resolve(tok.vocab)
    sp = sentencepiece(path)
    # sp.encode of a list encodes it in SentencePiece's own threads.
    return TextTokenizer(sp.encode, sp.decode, SPM_EOS_ID, sp.get_piece_size(), sp.encode)
  raise UserError(f'config.tokenizer.kind={tok.kind!r} cannot tokenize documents for language '
                  'modelling: use gpt2_bpe or sentencepiece')
