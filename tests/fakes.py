"""Small synthetic stand-ins for the downloadable assets, for fast tests without network access.

`make_fake_assets(cache_dir)` writes, in the layout of `llmjax.assets` (`<cache>/assets/<name>/`
with a `.complete` marker written last):
  * `movie-reviews`: a `movieReviewSnippets_GroundTruth.txt` of short synthetic sentences whose
    polarity is learnable from words like 'good'/'bad', plus a known number of bad lines
    (see the FAKE_* constants) that the builder must skip or drop.
  * `all-MiniLM-L6-v2`: only a tiny BERT-style `vocab.txt` covering those sentences.
Point `LLMJAX_CACHE` at `cache_dir` to use them.
"""

import json
import pathlib

import numpy as np

POSITIVE_WORDS = ('good', 'great', 'wonderful', 'fun', 'brilliant', 'moving', 'funny', 'best')
NEGATIVE_WORDS = ('bad', 'awful', 'boring', 'dull', 'terrible', 'worst', 'stupid', 'mess')
NEUTRAL_WORDS = ('the', 'a', 'movie', 'film', 'plot', 'story', 'actors', 'cast', 'director',
                 'script', 'is', 'was', 'and', 'but', 'this', 'it', 'very', 'quite', 'really',
                 'with', 'of', 'in', 'its', 'scenes', 'ending', 'music', 'time', 'too')
PUNCTUATION = ('.', ',', '!', '?', "'")
SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
# A continuation piece so that tests see WordPiece splitting ('movies' -> 'movie', '##s').
SUBWORDS = ('##s',)
VOCAB = SPECIAL_TOKENS + POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS + PUNCTUATION + SUBWORDS

# Lines added on top of the `num_sentences` labelled ones; the builder must not label any of them.
FAKE_NON_UTF8 = 2       # a latin-1 byte inside an otherwise fine line
FAKE_MALFORMED = 4      # two fields, unparsable rating, empty sentence, out-of-range rating
FAKE_ZERO_RATING = 1    # mean rating exactly 0

MOVIE_REVIEWS_FILE = 'movieReviewSnippets_GroundTruth.txt'


def _write_asset(cache_dir: pathlib.Path, name: str, files: dict[str, bytes]) -> pathlib.Path:
  asset_dir = pathlib.Path(cache_dir) / 'assets' / name
  asset_dir.mkdir(parents=True, exist_ok=True)
  for filename, data in files.items():
    (asset_dir / filename).write_bytes(data)
  # Written last: the asset cache treats a directory as present only once this marker exists.
  (asset_dir / '.complete').write_text(json.dumps({'name': name, 'fake': True,
                                                    'files': sorted(files)}))
  return asset_dir


def fake_sentence(rng: np.random.Generator, positive: bool) -> str:
  """A 5-15 word sentence with 1-2 polarity words of the given sign among neutral filler."""
  n = int(rng.integers(5, 16))
  words = list(rng.choice(NEUTRAL_WORDS, size=n))
  polar = POSITIVE_WORDS if positive else NEGATIVE_WORDS
  for _ in range(int(rng.integers(1, 3))):
    words[int(rng.integers(0, n))] = str(rng.choice(polar))
  return ' '.join(words) + ' ' + str(rng.choice(('.', '!')))


def fake_movie_review_lines(num_sentences: int = 400, seed: int = 0) -> list[bytes]:
  """The lines of the fake ground-truth file: `num_sentences` labelled ones plus the bad ones."""
  rng = np.random.default_rng(seed)
  lines = []
  for i in range(num_sentences):
    positive = bool(i % 2)  # balanced classes
    magnitude = round(float(rng.uniform(0.1, 4.0)), 3)
    rating = magnitude if positive else -magnitude
    lines.append(f'{i + 1}_1\t{rating}\t{fake_sentence(rng, positive)}'.encode())
  bad = [
      # Not UTF-8: latin-1 'é' (0xe9) and a stray 0xff byte.
      b'9001_1\t2.5\tthe film is a caf\xe9 of good scenes .',
      b'9002_1\t-1.5\tthe plot is \xff bad .',
      # Malformed.
      b'9003_1\t1.5',
      b'9004_1\tvery good\tthe movie is good .',
      b'9005_1\t-2.0\t   ',
      b'9006_1\t7.5\tthe movie is great .',
      # Exactly zero: no polarity, dropped.
      b'9007_1\t0.0\tthe movie is a movie .',
  ]
  assert len(bad) == FAKE_NON_UTF8 + FAKE_MALFORMED + FAKE_ZERO_RATING
  # Spread the bad lines through the file rather than leaving them all at the end.
  for j, line in enumerate(bad):
    lines.insert((j + 1) * len(lines) // (len(bad) + 1), line)
  return lines


def make_fake_assets(cache_dir: pathlib.Path, num_sentences: int = 400, seed: int = 0) -> None:
  """Writes fake `movie-reviews` and `all-MiniLM-L6-v2` (vocab.txt only) assets under cache_dir."""
  lines = fake_movie_review_lines(num_sentences, seed)
  _write_asset(cache_dir, 'movie-reviews', {MOVIE_REVIEWS_FILE: b'\n'.join(lines) + b'\n'})
  _write_asset(cache_dir, 'all-MiniLM-L6-v2', {'vocab.txt': ('\n'.join(VOCAB) + '\n').encode()})


# --- enwiki-sample: a small MediaWiki XML dump (bz2) and a Lee-style paragraph file. -------------

ENWIKI_FILE = 'enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2'
LEE_FILE = 'lee_background.cor'
FAKE_WIKI_ARTICLES = 60   # plain generated articles, all kept
# On top of those: 'Alpha' (kept, full of markup) and one page per skip reason below.
FAKE_WIKI_SKIPS = {'redirect': 1, 'non_article': 1, 'no_text': 1, 'too_short': 1,
                   'duplicate_title': 1}
FAKE_LEE_LINES = 30       # of which one is empty and one too short
# Wikitext exercising each kind of markup the cleaner must remove or keep; the plain text it must
# become is ALPHA_TEXT.
ALPHA_WIKITEXT = """{{Infobox thing
| name = Alpha {{nested|template}}
| image = Alpha.png
}}
'''Alpha''' is the first letter of the [[Greek alphabet]] and a [[Beta (letter)|sibling of beta]]
(from {{lang-grc|ἄλφα}}).<ref>{{cite web |url=http://example.com |title=Ref title}}</ref> It has
   many   uses in [[science]].<ref name="x"/>

<!-- a hidden comment -->
== History ==
[[File:Alpha.svg|thumb|A caption that is not prose]]
The letter was taken from the Phoenician ''aleph'' around 800 BC by early Greek writers.
{| class="wikitable"
|-
! Header cell
|-
| table cell one || table cell two
|}
[[Image:Other.jpg|left|Another caption]]
Later it spread to Latin and many other scripts of the world.

A broken citation.<ref>never closed
{| class="wikitable"
| an unclosed table cell
[[Category:Letters]]
[[de:Alpha]]
"""
# Lines of ALPHA_WIKITEXT the parser cannot read (unclosed <ref> and table), dropped and counted.
ALPHA_MARKUP_LINES = 3
ALPHA_TEXT = ('Alpha is the first letter of the Greek alphabet and a sibling of beta\n'
              '(from). It has\n'
              'many uses in science.\n'
              'History\n'
              'The letter was taken from the Phoenician aleph around 800 BC by early Greek '
              'writers.\n'
              'Later it spread to Latin and many other scripts of the world.')
_SYLLABLES = ('ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'zo', 'pe', 'si', 'van', 'dor', 'el', 'qui',
              'bra', 'sto', 'fen', 'gil', 'hu', 'jor', 'wex')


def fake_words(rng: np.random.Generator, n: int) -> list[str]:
  """n pseudo-words of 1-3 syllables: a few hundred distinct words, enough to fill a small vocab."""
  return [''.join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4)))) for _ in range(n)]


def fake_article(rng: np.random.Generator) -> str:
  """Wikitext of 2-3 paragraphs of 25-40 pseudo-words, with a link and a template."""
  paragraphs = []
  for _ in range(int(rng.integers(2, 4))):
    words = fake_words(rng, int(rng.integers(25, 41)))
    words[3] = f'[[{words[3]}]]'
    paragraphs.append(' '.join(words) + ' {{citation needed}}.')
  return '\n\n'.join(paragraphs)


def _page(title: str, ns: int, text: str | None, redirect: str | None = None) -> str:
  from xml.sax.saxutils import escape  # pylint: disable=g-import-not-at-top
  redirect_xml = f'\n    <redirect title="{escape(redirect)}" />' if redirect else ''
  text_xml = ('<text xml:space="preserve" />' if text is None else
              f'<text xml:space="preserve">{escape(text)}</text>')
  return (f'  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>1</id>'
          f'{redirect_xml}\n    <revision>\n      <id>2</id>\n      {text_xml}\n    </revision>\n'
          '  </page>\n')


def fake_wiki_titles() -> list[str]:
  return ['Alpha'] + [f'Article {i}' for i in range(FAKE_WIKI_ARTICLES)]


def fake_wiki_dump(seed: int = 0) -> bytes:
  """A bz2 MediaWiki export: Alpha, FAKE_WIKI_ARTICLES articles and one page per skip reason."""
  import bz2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  pages = [_page('Alpha', 0, ALPHA_WIKITEXT)]
  pages += [_page(f'Article {i}', 0, fake_article(rng)) for i in range(FAKE_WIKI_ARTICLES)]
  pages.insert(3, _page('Alpha letter', 0, '#REDIRECT [[Alpha]]', redirect='Alpha'))
  pages.insert(7, _page('Talk:Alpha', 1, ' '.join(fake_words(rng, 50))))
  pages.insert(11, _page('Empty page', 0, None))
  pages.insert(13, _page('Shorty', 0, "'''Shorty''' is a [[stub]]. {{stub}}"))
  pages.append(_page('Article 5', 0, fake_article(rng)))  # a second page with a seen title
  xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" '
         'xml:lang="en">\n  <siteinfo>\n    <sitename>Wikipedia</sitename>\n  </siteinfo>\n'
         + ''.join(pages) + '</mediawiki>\n')
  return bz2.compress(xml.encode('utf-8'))


def fake_lee_lines(seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  lines = [' '.join(fake_words(rng, int(rng.integers(25, 60)))) for _ in range(FAKE_LEE_LINES - 2)]
  lines.insert(4, '')             # no text
  lines.insert(9, 'Too short.')   # under MIN_WORDS
  return lines


def make_fake_enwiki(cache_dir: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes a fake `enwiki-sample` asset (see fake_wiki_dump / fake_lee_lines) under cache_dir."""
  return _write_asset(cache_dir, 'enwiki-sample', {
      ENWIKI_FILE: fake_wiki_dump(seed),
      LEE_FILE: ('\n'.join(fake_lee_lines(seed)) + '\n').encode()})


# --- gpt2-bpe: a tiny byte-level BPE vocabulary and merges in GPT-2's file formats. ---------------

# Byte-level symbols ('Ġ' is the space byte) and merges that build 'hello' and 'Ġworld'.
GPT2_MERGES = ('h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'o r', 'Ġw or', 'l d', 'Ġwor ld')
GPT2_VOCAB = ['<|endoftext|>', 'h', 'e', 'l', 'o', 'Ġ', 'w', 'r', 'd', '!',
              *(a + b for a, b in (m.split() for m in GPT2_MERGES))]


def make_fake_gpt2_bpe(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes encoder.json (token -> id) and vocab.bpe (a version line, then merges) to directory."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / 'encoder.json').write_text(json.dumps({t: i for i, t in enumerate(GPT2_VOCAB)}))
  (directory / 'vocab.bpe').write_text('#version: 0.2\n' + '\n'.join(GPT2_MERGES) + '\n')
  return directory / 'encoder.json', directory / 'vocab.bpe'
