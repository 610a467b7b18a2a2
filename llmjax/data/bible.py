"""TFDS builder `bible_en_es`: English-Spanish verse pairs from two public-domain Bibles.

Sources: the King James Version (SWORD module `engKJV2006eb`, Debian `sword-text-kjv`, asset
`bible-kjv`) and the Reina-Valera 1909 (`spaRV1909eb`, Debian `sword-text-sparv`, asset
`bible-sparv`), read with `pysword`. Both modules use the KJV versification, so a verse reference
(book, chapter, verse) names the same verse in both, but for the few places below.

Text: each verse's OSIS markup is parsed (Python's tolerant `html.parser`, since verse fragments are
not well-formed XML) and only its text kept: Strong's-number `<w>` wrappers, `<transChange>` (the
KJV's italic supplied words), `<divineName>` and the like keep their words; footnotes (`<note>`)
and non-canonical headings are dropped; a canonical `<title>` (a psalm's superscription, part of
verse 1 in both Bibles) is kept. The KJV's paragraph marks (a pilcrow in the text) are dropped and
whitespace is collapsed. A reference whose text is empty in either Bible after this is skipped, with
the chapters around it (see `align`), and counted (`AlignStats`, stored in `info.metadata`).

Splits by held-out BOOKS, so that no verse of a held-out book is seen in training:
  validation  Ruth, Joel, Jonah, Colossians, 1 Thessalonians, James             498 references
  test        Esther, Lamentations, Micah, Nahum, Habakkuk, Ephesians, Philippians,
              1 Peter, 1 John                                                   998 references
  train       the other 51 books                                             29,606 references
On the Debian bookworm packages 18 references have no Spanish text, at the ends of 13 chapters
where the Reina-Valera follows the Hebrew (or Greek) verse numbering; the chapters around them do
not align and are dropped (`align`: 23 chapters, 568 more pairs), so 30,516 pairs are kept: 29,047
train, 471 validation (Jonah 1-2 are dropped), 998 test. Features: id ('Gen.1.1'), book (OSIS
name), chapter, verse, en, es.
"""

import collections
import dataclasses
import html.parser
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from llmjax import assets
from llmjax.data import local_builder
from llmjax.errors import UserError

# (asset, SWORD module) of each language.
SOURCES = {'en': ('bible-kjv', 'engKJV2006eb'), 'es': ('bible-sparv', 'spaRV1909eb')}
VALIDATION_BOOKS = ('Ruth', 'Joel', 'Jonah', 'Col', '1Thess', 'Jas')
TEST_BOOKS = ('Esth', 'Lam', 'Mic', 'Nah', 'Hab', 'Eph', 'Phil', '1Pet', '1John')
SPLITS = ('train', 'validation', 'test')


def split_of(book: str) -> str:
  """The split of every verse of `book` (an OSIS name such as 'Gen' or '1John')."""
  if book in VALIDATION_BOOKS:
    return 'validation'
  return 'test' if book in TEST_BOOKS else 'train'


class _OsisText(html.parser.HTMLParser):
  """Collects the text of an OSIS verse fragment, without notes and non-canonical headings."""

  # Line and paragraph breaks separate words even where the markup has no space around them.
  _BREAKS = frozenset({'l', 'lb', 'lg', 'p', 'div', 'chapter'})

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.parts = []
    self._skip = 0  # depth inside an element whose text is dropped

  def handle_starttag(self, tag, attrs):
    if self._skip or tag == 'note' or (tag == 'title' and dict(attrs).get('canonical') != 'true'):
      self._skip += 1
    elif tag in self._BREAKS:
      self.parts.append(' ')

  def handle_startendtag(self, tag, attrs):
    # A milestone (<l sID=.../>, <lb/>): no text, and nothing to skip.
    if not self._skip and tag in self._BREAKS:
      self.parts.append(' ')

  def handle_endtag(self, tag):
    if self._skip:
      self._skip -= 1
    elif tag in self._BREAKS:
      self.parts.append(' ')

  def handle_data(self, data):
    if not self._skip:
      self.parts.append(data)


def osis_text(fragment: str) -> str:
  """The plain text of one verse's OSIS markup (see the module docstring), whitespace collapsed."""
  parser = _OsisText()
  parser.feed(fragment)
  parser.close()
  # The KJV marks its paragraphs with a pilcrow in the text; it is not part of any sentence.
  return ' '.join(''.join(parser.parts).replace('\N{PILCROW SIGN}', ' ').split())


def read_module(library: pathlib.Path, module: str) -> dict[tuple[str, int, int], str]:
  """Every verse reference of the module's versification -> its plain text ('' where empty)."""
  from pysword import modules as sword  # pylint: disable=g-import-not-at-top  (only to prepare)
  library_modules = sword.SwordModules(str(library))
  found = library_modules.parse_modules()
  if module not in found:
    raise UserError(f'{library} holds SWORD modules {sorted(found)}, not {module!r}: the pinned '
                    'package changed: check the asset table in llmjax/assets.py')
  bible = library_modules.get_bible_from_module(module)
  verses = {}
  for books in bible.get_structure().get_books().values():
    for book in books:
      refs = [(book.osis_name, chapter, verse)
              for chapter, length in enumerate(book.chapter_lengths, start=1)
              for verse in range(1, length + 1)]
      # One read per book: pysword yields the book's verses in (chapter, verse) order.
      texts = list(bible.get_iter(books=[book.name], clean=False))
      if len(texts) != len(refs):
        raise UserError(f'{module}: {book.osis_name} yielded {len(texts)} verses for {len(refs)} '
                        'references; the module is damaged: fetch the asset again')
      verses.update((ref, osis_text(text)) for ref, text in zip(refs, texts))
  return verses


@dataclasses.dataclass
class AlignStats:
  """What happened to each verse reference: `references` = kept + all the skip counts."""
  references: int = 0
  empty_en: int = 0      # skipped: no English text (missing in the module, or only markup)
  empty_es: int = 0      # skipped: no Spanish text
  empty_both: int = 0    # skipped: neither
  misaligned: int = 0    # skipped: a verse of a chapter that holds or follows a gap (see `align`)
  kept: int = 0
  gaps: list[str] = dataclasses.field(default_factory=list)       # ids of the empty references
  dropped_chapters: list[str] = dataclasses.field(default_factory=list)   # 'Num.13', ...
  per_split: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
  books: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))


def align(english: dict[tuple[str, int, int], str],
          spanish: dict[tuple[str, int, int], str]) -> tuple[dict[str, list[dict]], AlignStats]:
  """Verse pairs per split from two {reference: text} maps of one versification.

  A reference empty on one side only is a gap, and the two texts do not align around it: where the
  Reina-Valera follows the Hebrew verse numbering, the KJV's last verse(s) of a chapter open the
  next chapter of the Spanish module, which is then shifted by as many verses and merges its
  surplus into its last verse (Num 12:16 -> Num 13:1, ... Job 39, Jonah 1:17 -> 2:1), or the
  missing text is merged into a verse before it (Acts 19:40, 2 Cor 13:12). So every chapter
  holding a gap is dropped whole, and so is the next chapter when the gap ends its chapter.
  """
  if english.keys() != spanish.keys():
    raise UserError('the English and Spanish modules use different versifications; both must be '
                    'KJV: check the asset table in llmjax/assets.py')
  stats = AlignStats()
  last_verse = collections.Counter()
  for book, chapter, verse in english:
    last_verse[book, chapter] = max(last_verse[book, chapter], verse)
  dropped = set()
  for (book, chapter, verse), en in english.items():
    es = spanish[book, chapter, verse]
    if en and es:
      continue
    if not (en or es):  # in neither Bible: nothing is displaced
      stats.empty_both += 1
      continue
    if en:
      stats.empty_es += 1
    else:
      stats.empty_en += 1
    stats.gaps.append(f'{book}.{chapter}.{verse}')
    dropped.add((book, chapter))
    if verse == last_verse[book, chapter] and (book, chapter + 1) in last_verse:
      dropped.add((book, chapter + 1))
  stats.dropped_chapters = [f'{b}.{c}' for b, c in sorted(dropped)]
  examples = {s: [] for s in SPLITS}
  books = collections.defaultdict(set)
  for (book, chapter, verse), en in english.items():
    es = spanish[book, chapter, verse]
    stats.references += 1
    if not (en and es):
      continue  # counted above
    if (book, chapter) in dropped:
      stats.misaligned += 1
      continue
    split = split_of(book)
    examples[split].append({'id': f'{book}.{chapter}.{verse}', 'book': book, 'chapter': chapter,
                            'verse': verse, 'en': en, 'es': es})
    stats.kept += 1
    stats.per_split[split] += 1
    books[split].add(book)
  stats.books = {s: len(books[s]) for s in SPLITS}
  return examples, stats


class BibleEnEs(local_builder.LocalBuilder):
  """KJV / Reina-Valera 1909 verse pairs split by held-out books (see the module docstring)."""

  ASSET = SOURCES['en'][0]  # `parse` fetches the Spanish asset too.
  SPLITS = SPLITS
  DESCRIPTION = (
      'English (King James Version, 1769) and Spanish (Reina-Valera 1909) Bible verses aligned by '
      'reference (both KJV versification), from the CrossWire SWORD modules in Debian. '
      f'Validation: {", ".join(VALIDATION_BOOKS)}; test: {", ".join(TEST_BOOKS)}; train: the other '
      'books. Skipped-reference counts are in info.metadata.')
  HOMEPAGE = 'https://crosswire.org/sword/'
  SUPERVISED_KEYS = ('en', 'es')

  def features(self):
    return tfds.features.FeaturesDict({
        'id': tfds.features.Text(),
        'book': tfds.features.Text(),
        'chapter': tfds.features.Scalar(dtype=np.int32),
        'verse': tfds.features.Scalar(dtype=np.int32),
        'en': tfds.features.Text(),
        'es': tfds.features.Text(),
    })

  def parse(self, asset_dir: pathlib.Path):
    english = read_module(asset_dir, SOURCES['en'][1])
    spanish = read_module(assets.fetch(SOURCES['es'][0]), SOURCES['es'][1])
    return align(english, spanish)
