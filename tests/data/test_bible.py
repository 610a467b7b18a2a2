"""The `bible_en_es` builder on fake SWORD modules (tests/fakes.py) written in the real format."""

import pytest
from pysword import books

import fakes
from llmjax.data import bible, tfds_sources
from llmjax.errors import UserError


def test_osis_text_keeps_verse_words_only():
  assert bible.osis_text(fakes.FAKE_BIBLE_GEN_1_1) == fakes.FAKE_BIBLE_GEN_1_1_TEXT
  # A psalm's superscription is canonical text of verse 1; footnotes and headings are not.
  assert bible.osis_text('<title canonical="true" type="psalm">A Psalm of David.</title> <l/>LORD,'
                         ' hear<note n="a">Heb. <i>listen</i></note> me.<lb/>') == (
                             'A Psalm of David. LORD, hear me.')
  assert bible.osis_text('<title type="x-heading">Heading</title><note>only a note</note>') == ''


def test_held_out_books_are_whole_and_sized_as_documented():
  structure = books.BibleStructure('kjv').get_books()
  verses = {b.osis_name: sum(b.chapter_lengths) for t in ('ot', 'nt') for b in structure[t]}
  assert set(bible.VALIDATION_BOOKS) <= verses.keys() and set(bible.TEST_BOOKS) <= verses.keys()
  assert not set(bible.VALIDATION_BOOKS) & set(bible.TEST_BOOKS)
  sizes = {s: sum(n for b, n in verses.items() if bible.split_of(b) == s) for s in bible.SPLITS}
  assert sizes == {'train': 29_606, 'validation': 498, 'test': 998}


def test_builder_aligns_verses_and_counts_what_it_skips(fake_cache):
  sources = tfds_sources.open_splits(
      'bible_en_es', {s: s for s in bible.SPLITS}, fake_cache / 'tensorflow_datasets')
  examples = {s: [sources[s][i] for i in range(len(sources[s]))] for s in bible.SPLITS}
  expected = {s: sum(n for (b, _), n in fakes.FAKE_BIBLE_CHAPTERS.items() if bible.split_of(b) == s)
              for s in bible.SPLITS}
  # Gen.2.25 (no English) and Matt.1.25 (no Spanish) end their chapters: both chapters go, with
  # the next ones (absent from the fake).
  expected['train'] -= fakes.FAKE_BIBLE_CHAPTERS['Gen', 2] + fakes.FAKE_BIBLE_CHAPTERS['Matt', 1]
  assert {s: len(v) for s, v in examples.items()} == expected
  by_id = {e['id'].decode(): e for v in examples.values() for e in v}
  assert by_id['Gen.1.1']['en'].decode() == fakes.FAKE_BIBLE_GEN_1_1_TEXT
  assert {i.rsplit('.', 1)[0] for i in by_id} == {'Gen.1', 'Exod.1', 'Ruth.1', 'Esth.1', 'Eph.1'}
  english, spanish = fakes.fake_bible_verses()
  ruth = by_id['Ruth.1.7']
  assert (ruth['book'].decode(), int(ruth['chapter']), int(ruth['verse'])) == ('Ruth', 1, 7)
  assert ruth['es'].decode() == spanish['Ruth', 1, 7]
  assert ruth['en'].decode() == bible.osis_text(english['Ruth', 1, 7])
  assert {e['book'].decode() for e in examples['test']} == {'Esth', 'Eph'}
  import tensorflow_datasets as tfds
  meta = tfds.builder('bible_en_es', data_dir=str(fake_cache / 'tensorflow_datasets')).info.metadata
  assert (meta['empty_en'], meta['empty_es'], meta['kept']) == (1, 1, sum(expected.values()))
  assert meta['gaps'] == ['Gen.2.25', 'Matt.1.25'] and meta['misaligned'] == 24 + 24
  assert meta['dropped_chapters'] == ['Gen.2', 'Gen.3', 'Matt.1', 'Matt.2']
  assert meta['references'] == 31_102


def test_a_gap_drops_its_chapter_and_the_shifted_next_one():
  # As the Reina-Valera at Num 12:16: the gap ends chapter 1, whose text opens chapter 2.
  english = {('Num', c, v): f'en {c}:{v}' for c in (1, 2, 3) for v in (1, 2, 3)}
  spanish = {**english, ('Num', 1, 3): ''}
  examples, stats = bible.align(english, spanish)
  assert [e['id'] for e in examples['train']] == ['Num.3.1', 'Num.3.2', 'Num.3.3']
  assert (stats.empty_es, stats.misaligned, stats.dropped_chapters) == (1, 5, ['Num.1', 'Num.2'])
  # A gap inside a chapter drops that chapter only.
  examples, stats = bible.align(english, {**english, ('Num', 2, 2): ''})
  assert [e['id'] for e in examples['train']] == ['Num.1.1', 'Num.1.2', 'Num.1.3', 'Num.3.1',
                                                  'Num.3.2', 'Num.3.3']


def test_align_refuses_different_versifications():
  with pytest.raises(UserError, match='different versifications'):
    bible.align({('Gen', 1, 1): 'a'}, {('Gen', 1, 2): 'b'})
