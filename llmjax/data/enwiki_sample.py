"""TFDS builder `enwiki_sample`: plain-text English Wikipedia articles (and Lee news paragraphs).

Source: the `enwiki-sample` asset (gensim 4.4.0 test data, nothing installed):
  * config `wiki` (the default): `enwiki-latest-pages-articles1.xml-p000000010p000030302-
    shortened.bz2`, a MediaWiki XML export of 206 pages (2016 dump, articles shortened by gensim).
  * config `lee`: `lee_background.cor`, 300 Australian news paragraphs (Lee et al. 2005), one per
    line; titles are `lee-<line number>`.

Cleaning (wiki): pages are streamed with `xml.etree.ElementTree.iterparse`; redirects and pages
outside the article namespace (ns != 0) are skipped. Wikitext becomes plain text with
`mwparserfromhell`: templates, <ref> and other invisible tags, tables, comments, file/image,
category and interlanguage links are removed, links keep their visible text, headings stay as their
own lines, and `strip_code` drops the remaining markup. Each line is whitespace-collapsed, blank
lines dropped, and paragraphs (lines) joined with newlines. Lines that still hold wikitext the
parser could not read (an unclosed table, file link or <ref>) are dropped and counted. Articles with
fewer than `MIN_WORDS` words left are dropped. Every skipped or dropped page is counted by reason
(see `ParseStats`, stored in `builder.info.metadata`), never silently lost; so are duplicate titles
and pages without text.

On the gensim 4.4.0 file: 206 pages, 100 redirects skipped, 106 articles kept (none too short),
270 unparsed-markup lines dropped; train 98 articles / 405,335 words / 2,583,060 characters,
validation 8 / 42,925 / 270,529. The `lee` config keeps all 300 paragraphs (285 train, 15
validation; 59,890 words).

Splits, a function of the title only: `int(sha256(title.encode('utf-8')).hexdigest(), 16) % 20`
is 0 for validation (~5%), anything else for train.

Features: `title` (Text) and `text` (Text). ArrayRecord, no TensorFlow:
  builder = EnwikiSample(data_dir=..., file_format='array_record')
  builder.download_and_prepare(file_format='array_record')
  builder.as_data_source(split='train')   # or llmjax.data.text.open_text(config.data)
"""

import bz2
import dataclasses
import pathlib
import xml.etree.ElementTree as ET

from absl import logging
import mwparserfromhell
import tensorflow_datasets as tfds

from llmjax.data import local_builder

ASSET = 'enwiki-sample'
WIKI_FILE = 'enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'
LEE_FILE = 'lee_background.cor'
SPLITS = ('train', 'validation')
# sha256(title) mod 20: bucket 0 validation (~5%), 1-19 train.
SHARES = (('validation', 1), ('train', 19))
# Below this many words an "article" is a stub, a list skeleton or what is left of a page made of
# templates and tables: not useful running text.
MIN_WORDS = 20
# Link prefixes whose targets are not text of the article: media and category tags.
_DROP_LINK_PREFIXES = frozenset({'file', 'image', 'media', 'category'})
# Tags that never hold running text. strip_code already hides <ref> and the other invisible tags;
# tables are visible to it, so their cell contents would run into the prose.
_DROP_TAGS = frozenset({'ref', 'references', 'table', 'gallery', 'math', 'timeline', 'imagemap'})
# Wikitext that must never survive into plain text (see `_has_markup`).
_MARKUP = ('[[', ']]', '{{', '}}', '{|', '|}', '<ref', '</ref')


def split_of(title: str) -> str:
  """sha256(title) mod 20 == 0 -> 'validation', else 'train'."""
  return local_builder.split_of(title, SHARES)


@dataclasses.dataclass
class ParseStats:
  """What happened to each page (or Lee line): `pages` = kept + all the skip counts."""
  pages: int = 0
  redirect: int = 0           # skipped: a redirect page
  non_article: int = 0        # skipped: namespace other than 0 (Talk, Wikipedia, Template, ...)
  no_text: int = 0            # skipped: no <text> element, or it is empty
  too_short: int = 0          # dropped: fewer than MIN_WORDS words after cleaning
  duplicate_title: int = 0    # skipped: title seen before (its split and key would be ambiguous)
  kept: int = 0
  # Lines of kept articles dropped because they still held wikitext the parser could not read.
  markup_lines: int = 0
  articles: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
  words: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
  chars: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))


def _drop_link(title: str, has_text: bool) -> bool:
  title = title.strip()
  if title.startswith(':'):
    return False  # [[:Category:X]] is a visible link to that page, not a tag
  prefix, colon, _ = title.partition(':')
  if not colon:
    return False
  prefix = prefix.strip()
  if prefix.lower() in _DROP_LINK_PREFIXES:
    return True
  # Interlanguage links ([[de:Anarchismus]]) have a lowercase language code and no display text;
  # they name the same article in another language, not text of this one.
  return not has_text and prefix.islower() and prefix.replace('-', '').isalpha()


def _dropped(node) -> bool:
  if isinstance(node, mwparserfromhell.nodes.Template):
    return True
  if isinstance(node, mwparserfromhell.nodes.Tag):
    return str(node.tag).strip().lower() in _DROP_TAGS
  if isinstance(node, mwparserfromhell.nodes.Wikilink):
    return _drop_link(str(node.title), node.text is not None)
  return False


def _prune(code) -> None:
  """Removes the dropped nodes from `code` and from the visible parts of the nodes it keeps."""
  # One pass that rebuilds each node list: `Wikicode.remove` searches the whole tree per call,
  # which is quadratic on long articles (minutes for the sample instead of seconds).
  kept = []
  for node in code.nodes:
    if _dropped(node):
      continue
    if isinstance(node, mwparserfromhell.nodes.Tag) and node.contents is not None:
      _prune(node.contents)
    elif isinstance(node, mwparserfromhell.nodes.Wikilink) and node.text is not None:
      _prune(node.text)
    elif isinstance(node, mwparserfromhell.nodes.Heading):
      _prune(node.title)
    kept.append(node)
  code.nodes = kept


def wikitext_to_text(wikitext: str) -> str:
  """Plain text of an article's wikitext (see the module docstring for what is kept)."""
  return clean_wikitext(wikitext)[0]


def clean_wikitext(wikitext: str) -> tuple[str, int]:
  """Returns (plain text, number of lines dropped because they still held unparsed markup)."""
  code = mwparserfromhell.parse(wikitext)
  _prune(code)
  text = code.strip_code(normalize=True, collapse=True)
  lines = []
  dropped = 0
  for line in text.splitlines():
    line = ' '.join(line.split())
    # Templates removed from inside parentheses (e.g. pronunciations, dates) leave "()" behind.
    line = line.replace('( ', '(').replace(' )', ')').replace(' ()', '').replace('()', '')
    line = line.strip()
    if not line:
      continue
    if _has_markup(line):
      dropped += 1
      continue
    lines.append(line)
  return '\n'.join(lines), dropped


def _has_markup(line: str) -> bool:
  # mwparserfromhell gives up on some constructs it cannot close (gensim cut the articles short,
  # and some markup is malformed) and returns them as text: raw tables, file links, <ref>s. Such a
  # line is not prose; it is dropped and counted rather than fed to the model.
  return line.startswith(('|', '!')) or any(m in line for m in _MARKUP)


def _local(tag: str) -> str:
  return tag.rpartition('}')[2]  # drop the export schema's XML namespace


def parse_dump(path: pathlib.Path) -> tuple[dict[str, list[dict]], ParseStats]:
  """Reads a bz2 MediaWiki XML dump into cleaned articles per split, counting what was skipped."""
  examples = {s: [] for s in SPLITS}
  stats = ParseStats()
  seen = set()
  with bz2.open(path, 'rb') as f:
    for _, elem in ET.iterparse(f, events=('end',)):
      if _local(elem.tag) != 'page':
        continue
      stats.pages += 1
      fields = {_local(child.tag): child for child in elem}
      title = (fields['title'].text or '').strip() if 'title' in fields else ''
      ns = (fields['ns'].text or '').strip() if 'ns' in fields else '0'
      revision = fields.get('revision')
      text_elem = None
      if revision is not None:
        text_elem = next((c for c in revision if _local(c.tag) == 'text'), None)
      wikitext = text_elem.text if text_elem is not None else None
      elem.clear()  # keep memory flat on a full dump
      if 'redirect' in fields:
        stats.redirect += 1
      elif ns != '0':
        stats.non_article += 1
      elif not wikitext or not title:
        stats.no_text += 1
      elif title in seen:
        stats.duplicate_title += 1
      else:
        seen.add(title)
        text, dropped = clean_wikitext(wikitext)
        stats.markup_lines += dropped
        _add(examples, stats, title, text)
  return examples, stats


def parse_lee(path: pathlib.Path) -> tuple[dict[str, list[dict]], ParseStats]:
  """Reads the Lee corpus (one paragraph per line) into examples per split, with the same stats."""
  examples = {s: [] for s in SPLITS}
  stats = ParseStats()
  for lineno, line in enumerate(path.read_text('utf-8').splitlines(), start=1):
    stats.pages += 1
    text = ' '.join(line.split())
    if not text:
      stats.no_text += 1
    else:
      _add(examples, stats, f'lee-{lineno}', text)
  return examples, stats


def _add(examples, stats: ParseStats, title: str, text: str) -> None:
  words = len(text.split())
  if words < MIN_WORDS:
    stats.too_short += 1
    logging.debug('%s: %d words after cleaning, dropped', title, words)
    return
  split = split_of(title)
  examples[split].append({'title': title, 'text': text})
  stats.kept += 1
  stats.articles[split] += 1
  stats.words[split] += words
  stats.chars[split] += len(text)


class EnwikiSample(local_builder.LocalBuilder):
  """Plain-text Wikipedia articles (`wiki`) or Lee news paragraphs (`lee`); see module docstring."""

  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='wiki', description='206 pages of an English Wikipedia dump.'),
      tfds.core.BuilderConfig(name='lee', description='300 Lee news paragraphs.'),
  ]
  DEFAULT_CONFIG_NAME = 'wiki'
  ASSET = ASSET
  SPLITS = SPLITS
  KEY = 'title'
  DESCRIPTION = (
      'English Wikipedia articles from the MediaWiki dump sample shipped with gensim 4.4.0, '
      'converted to plain text with mwparserfromhell (templates, refs, tables, files, categories '
      'removed); redirects, non-article pages and articles under 20 words skipped and counted in '
      'info.metadata. Split by sha256(title) mod 20: 0 validation, else train.')
  HOMEPAGE = 'https://github.com/piskvorky/gensim/tree/develop/gensim/test/test_data'

  def features(self):
    return tfds.features.FeaturesDict({
        'title': tfds.features.Text(),
        'text': tfds.features.Text(),
    })

  def parse(self, asset_dir):
    if self.builder_config.name == 'wiki':
      return parse_dump(asset_dir / WIKI_FILE)
    return parse_lee(asset_dir / LEE_FILE)
