"""Trains a SentencePiece model on a prepared text corpus and caches it by its settings.

  python -m llmjax.data.spm_train --corpus=enwiki_sample --vocab_size=8000 [--model_type=unigram]

prints the path of the model, `$LLMJAX_CACHE/spm/<name>-<vocab_size>-<model_type>.model`, where
<name> is the corpus with '/' and ':' replaced by '_' (plus `_<split>` for a split other than
train). A model already there is reused, not retrained, so the command is cheap to run before every
training job. The corpus is opened with `llmjax.data.text.open_text` (any dataset it supports:
`enwiki_sample`, `c4`, `lm1b`, ...), its documents fed to
`llmjax.data.tokenizers.train_sentencepiece` (T5 specials: pad=0, eos=1, unk=2, no bos).
"""

import argparse
import contextlib
import pathlib
import sys
import time

from absl import logging
import ml_collections

from llmjax import assets
from llmjax.data import text as text_lib
from llmjax.data import tfds_sources
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError


def model_path(corpus: str, vocab_size: int, model_type: str, split: str = 'train',
               text_key: str = 'text') -> pathlib.Path:
  """Where the model for these settings is cached (whether or not it exists yet)."""
  name = corpus.replace('/', '_').replace(':', '_')
  if split != 'train':
    name += '_' + ''.join(c if c.isalnum() else '_' for c in split)
  if text_key != 'text':
    name += '_' + ''.join(c if c.isalnum() else '_' for c in text_key)
  return assets.cache_dir() / 'spm' / f'{name}-{vocab_size}-{model_type}.model'


def train_cached(corpus: str, vocab_size: int, model_type: str = 'unigram', *,
                 split: str = 'train', text_key: str = 'text',
                 data_dir: str = '') -> pathlib.Path:
  """Returns the cached model for these settings, training it on `corpus[split]` if missing.

  `text_key` may name several features, comma-separated ('en,de'): a vocabulary shared by both
  sides of a translation corpus.
  """
  path = model_path(corpus, vocab_size, model_type, split, text_key)
  # Two jobs starting together train once: the second waits, then finds the model.
  with tfds_sources.exclusive(path.parent / '.llmjax-spm.lock'):
    if path.exists():
      return path
    data = ml_collections.ConfigDict({'name': corpus, 'data_dir': data_dir,
                                      'splits': {split: split}})
    keys = text_key.split(',')
    source = text_lib.open_text(data, keys)[split]
    # Index by index: a plain iteration would also work, but TFDS mock sources only support [i].
    docs = (text for i in range(len(source))
            for text in ((source[i],) if len(keys) == 1 else source[i]))
    start = time.time()
    tokenizers_lib.train_sentencepiece(docs, vocab_size, model_type, path.with_suffix(''))
    logging.info('trained %s on %d documents of %s[%s] in %.1fs', path, len(source), corpus, split,
                 time.time() - start)
  return path


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m llmjax.data.spm_train', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--corpus', required=True, help='dataset name, e.g. enwiki_sample or c4')
  parser.add_argument('--vocab_size', type=int, default=8000)
  parser.add_argument('--model_type', choices=tokenizers_lib.SPM_MODEL_TYPES, default='unigram')
  parser.add_argument('--split', default='train', help='TFDS split string to train on')
  parser.add_argument('--text_key', default='text',
                      help='the text feature of the dataset; several, comma-separated, share one model')
  parser.add_argument('--data_dir', default='', help='TFDS data_dir (default: in LLMJAX_CACHE)')
  args = parser.parse_args(argv)
  try:
    # TFDS reports preparation on stdout; send that to stderr so that stdout is only the path
    # (MODEL=$(python -m llmjax.data.spm_train ...) works).
    with contextlib.redirect_stdout(sys.stderr):
      path = train_cached(args.corpus, args.vocab_size, args.model_type, split=args.split,
                          text_key=args.text_key, data_dir=args.data_dir)
  except UserError as e:
    print(f'llmjax: error: {e}', file=sys.stderr)
    return 2
  print(path)
  return 0


if __name__ == '__main__':
  logging.set_verbosity(logging.WARNING)
  sys.exit(main(sys.argv[1:]))
