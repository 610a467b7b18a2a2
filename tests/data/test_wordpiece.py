"""WordPiece tokenizer tests: ids of a known sentence, pair token types, truncation, path errors."""

import pytest

import fakes
from llmjax import assets
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError


@pytest.fixture
def vocab(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_assets(tmp_path, num_sentences=10)
  return assets.resolve('asset:all-MiniLM-L6-v2/vocab.txt')


def ids(*tokens):
  return [fakes.VOCAB.index(t) for t in tokens]


def test_known_sentence(vocab):
  tok = tokenizers_lib.wordpiece(vocab, max_len=32)
  enc = tok.encode('The movies were GOOD, really!')
  # Lowercased, 'movies' split into word pieces, an unknown word as [UNK], punctuation split off.
  tokens = ['[CLS]', 'the', 'movie', '##s', '[UNK]', 'good', ',', 'really', '!', '[SEP]']
  assert enc.tokens == tokens
  # ids are line numbers of vocab.txt (pinned here so a change to the fake vocabulary is noticed).
  assert enc.ids == [2, 21, 23, 54, 1, 5, 50, 39, 51, 3] == ids(*tokens)
  assert enc.type_ids == [0] * 10
  assert fakes.VOCAB.index('[PAD]') == 0 and tok.token_to_id('[PAD]') == 0


def test_no_lowercase_keeps_case(vocab):
  tok = tokenizers_lib.wordpiece(vocab, lowercase=False, max_len=32)
  assert tok.encode('GOOD good').tokens == ['[CLS]', '[UNK]', 'good', '[SEP]']


def test_pair_token_types(vocab):
  tok = tokenizers_lib.wordpiece(vocab, max_len=32)
  enc = tok.encode('the movie', 'was good')
  assert enc.tokens == ['[CLS]', 'the', 'movie', '[SEP]', 'was', 'good', '[SEP]']
  assert enc.type_ids == [0, 0, 0, 0, 1, 1, 1]
  # Batches of pairs go through the same template.
  assert tok.encode_batch([('the movie', 'was good')])[0].ids == enc.ids


def test_truncation_single(vocab):
  tok = tokenizers_lib.wordpiece(vocab, max_len=5)
  enc = tok.encode('the movie was really very good')
  assert enc.tokens == ['[CLS]', 'the', 'movie', 'was', '[SEP]']


def test_truncation_pair_longest_first(vocab):
  tok = tokenizers_lib.wordpiece(vocab, max_len=8)
  enc = tok.encode('the movie was really very good', 'bad plot')
  # 8 = [CLS] + 3 + [SEP] + 2 + [SEP]: only the longer text lost tokens.
  assert enc.tokens == ['[CLS]', 'the', 'movie', 'was', '[SEP]', 'bad', 'plot', '[SEP]']
  assert enc.type_ids == [0, 0, 0, 0, 0, 1, 1, 1]


def test_no_padding(vocab):
  tok = tokenizers_lib.wordpiece(vocab, max_len=32)
  assert [len(e.ids) for e in tok.encode_batch(['good', 'the movie was good'])] == [3, 6]


def test_missing_vocab_is_user_error(tmp_path):
  with pytest.raises(UserError, match='vocabulary file not found'):
    tokenizers_lib.wordpiece(tmp_path / 'nope.txt', max_len=32)


def test_vocab_without_special_tokens_is_user_error(tmp_path):
  (tmp_path / 'vocab.txt').write_text('the\nmovie\n')
  with pytest.raises(UserError, match='special tokens'):
    tokenizers_lib.wordpiece(tmp_path / 'vocab.txt', max_len=32)
