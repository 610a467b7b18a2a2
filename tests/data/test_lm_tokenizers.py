"""GPT-2 byte-level BPE and SentencePiece tests: load, train, the cached training command, and
encoding many texts in one call."""

import contextlib
import io

import ml_collections
import numpy as np
import pytest

import fakes
from llmjax import assets
from llmjax.data import spm_train
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError


def test_gpt2_bpe_fake_vocab(tmp_path):
  tok = tokenizers_lib.gpt2_bpe(*fakes.make_fake_gpt2_bpe(tmp_path))
  enc = tok.encode('hello world<|endoftext|>')
  # Byte-level: the space is part of the next token ('Ġ'); the end-of-text marker is never split.
  assert enc.tokens == ['hello', 'Ġworld', '<|endoftext|>']
  assert enc.ids == [fakes.GPT2_VOCAB.index(t) for t in enc.tokens]
  # No specials added around an encoding (GPT-2 has no [CLS]/bos), and decoding is lossless.
  assert tok.encode('hello').ids == [fakes.GPT2_VOCAB.index('hello')]
  assert tok.decode(tok.encode('hello world!').ids) == 'hello world!'


def test_gpt2_bpe_errors(tmp_path):
  encoder, merges = fakes.make_fake_gpt2_bpe(tmp_path)
  with pytest.raises(UserError, match='GPT-2 BPE file not found.*asset:gpt2-bpe'):
    tokenizers_lib.gpt2_bpe(tmp_path / 'nope.json', merges)
  encoder.write_text('{"h": 0, "e": 1}')
  (tmp_path / 'vocab.bpe').write_text('#version: 0.2\nh e\n')
  with pytest.raises(UserError, match='no <|endoftext|> token'):
    tokenizers_lib.gpt2_bpe(encoder, merges)


@pytest.mark.skipif(assets.cached('gpt2-bpe') is None,
                    reason='gpt2-bpe asset not fetched (python -m llmjax.assets fetch gpt2-bpe)')
def test_gpt2_bpe_real_vocab():
  path = assets.cached('gpt2-bpe')
  tok = tokenizers_lib.gpt2_bpe(path / 'encoder.json', path / 'vocab.bpe')
  assert tok.get_vocab_size() == 50257
  assert tok.encode('Hello world').ids == [15496, 995]
  assert tok.encode(' Hello world<|endoftext|>').ids == [18435, 995, 50256]
  text = 'Ünïcode  text\n\twith  spaces 🙂'
  assert tok.decode(tok.encode(text).ids) == text


def corpus(n=200, seed=0):
  rng = np.random.default_rng(seed)
  # Documents of two lines each: lines are what SentencePiece trains on.
  return [fakes.fake_sentence(rng, i % 2 == 0) + '\n' + fakes.fake_sentence(rng, i % 2 == 1)
          for i in range(n)]


@pytest.mark.parametrize('model_type', ['unigram', 'bpe'])
def test_train_sentencepiece(tmp_path, model_type):
  path = tokenizers_lib.train_sentencepiece(iter(corpus()), 60, model_type, tmp_path / 'm' / 'x')
  assert path == tmp_path / 'm' / 'x.model'
  # Only the two outputs remain: the temporary training directory is gone.
  assert sorted(p.name for p in path.parent.iterdir()) == ['x.model', 'x.vocab']
  sp = tokenizers_lib.sentencepiece(path)
  assert sp.vocab_size() == 60
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert [sp.id_to_piece(i) for i in range(3)] == ['<pad>', '</s>', '<unk>']
  sentence = 'the movie was good and the plot was boring .'
  ids = sp.encode(sentence)
  assert ids and min(ids) > 2  # every word of the corpus is covered: no unk
  assert sp.decode(ids) == sentence


def test_text_tokenizer_encodes_many_texts_as_it_encodes_each(tmp_path):
  encoder, merges = fakes.make_fake_gpt2_bpe(tmp_path)
  model = tokenizers_lib.train_sentencepiece(iter(corpus()), 60, 'unigram', tmp_path / 'spm' / 'x')
  texts = ['hello world!', '', 'world hello<|endoftext|>hello', 'the movie was good .']
  for tokenizer in (dict(kind='gpt2_bpe', vocab=str(encoder), merges=str(merges)),
                    dict(kind='sentencepiece', vocab=str(model))):
    tok = tokenizers_lib.text_tokenizer(ml_collections.ConfigDict({'tokenizer': tokenizer}))
    assert tok.encode_batch is not None  # the library's own batch call, not a loop
    expected = [tok.encode(t) for t in texts]
    assert tok.encode_many(texts) == expected and sum(map(len, expected)) > 8


def test_train_sentencepiece_errors(tmp_path):
  with pytest.raises(UserError, match="model_type='word' is not supported"):
    tokenizers_lib.train_sentencepiece(corpus(), 80, 'word', tmp_path / 'x')
  with pytest.raises(UserError, match='vocab_size=4 is too small'):
    tokenizers_lib.train_sentencepiece(corpus(), 4, 'unigram', tmp_path / 'x')
  with pytest.raises(UserError, match='SentencePiece training failed.*smaller vocab_size'):
    tokenizers_lib.train_sentencepiece(corpus(20), 5000, 'unigram', tmp_path / 'x')
  assert not list(tmp_path.iterdir())  # a failed run leaves nothing behind


def test_sentencepiece_loader_errors(tmp_path):
  with pytest.raises(UserError, match='SentencePiece model not found.*spm_train'):
    tokenizers_lib.sentencepiece(tmp_path / 'nope.model')
  (tmp_path / 'bad.model').write_bytes(b'not a model')
  with pytest.raises(UserError, match='is not a SentencePiece model'):
    tokenizers_lib.sentencepiece(tmp_path / 'bad.model')


def test_spm_train_command_caches_by_settings(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_enwiki(tmp_path)

  def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      assert spm_train.main(['--corpus=enwiki_sample', *args]) == 0
    return out.getvalue().strip()

  path = run('--vocab_size=100')
  assert path == str(tmp_path / 'spm' / 'enwiki_sample-100-unigram.model')
  sp = tokenizers_lib.sentencepiece(path)
  assert sp.vocab_size() == 100 and sp.pad_id() == 0 and sp.eos_id() == 1
  # Idempotent: the same settings reuse the model without training (it would fail here).
  monkeypatch.setattr(tokenizers_lib, 'train_sentencepiece',
                      lambda *a, **k: pytest.fail('retrained a cached model'))
  assert run('--vocab_size=100') == path
  monkeypatch.undo()
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  # Other settings are another model.
  assert run('--vocab_size=90', '--model_type=bpe').endswith('enwiki_sample-90-bpe.model')
  assert spm_train.model_path('enwiki_sample/lee', 50, 'unigram', 'train[:10%]').name == (
      'enwiki_sample_lee_train__10__-50-unigram.model')


def test_spm_train_command_errors(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_enwiki(tmp_path)
  assert spm_train.main(['--corpus=enwiki_sample', '--vocab_size=100000']) == 2
  captured = capsys.readouterr()
  assert not captured.out
  # The error is the last line of stderr (TFDS's preparation messages come before it).
  assert captured.err.splitlines()[-1].startswith('llmjax: error: SentencePiece training failed')
  assert not (tmp_path / 'spm' / 'enwiki_sample-100000-unigram.model').exists()
