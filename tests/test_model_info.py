"""Parameter counts against the reference implementations, and the FLOP and memory arithmetic."""

import subprocess
import sys

from conftest import REPO, load_config
from llmjax import config_lib, model_info


def test_bert_base_and_minilm_parameter_counts():
  config = config_lib.base_config()  # BERT-base architecture.
  info = model_info.describe(config)
  assert info['params_by_module']['bert'] == 109_482_240  # transformers BertModel, bert-base-uncased
  assert info['params_by_module']['classifier'] == 768 * 2 + 2
  config.model.update(hidden_size=384, num_layers=6, intermediate_size=1536)
  assert model_info.describe(config)['params_by_module']['bert'] == 22_713_216  # all-MiniLM-L6-v2


def test_gpt2_small_parameter_count_and_tied_head_flops():
  info = model_info.describe(load_config('gpt_lm', 'gpt2_small'))
  assert info['params'] == 124_439_808  # transformers GPT2LMHeadModel, tied head
  non_embedding = info['params'] - info['embedding_params']
  # 6 FLOPs per weight of every multiply, the tied output layer included, plus attention.
  kernels = non_embedding - 12 * (4 * 768 + 3072 + 768 + 2 * 2 * 768) - 2 * 768
  assert info['train_flops_per_token'] == 6 * (kernels + 50257 * 768) + 12 * 12 * 1024 * 768


def test_flops_and_memory_arithmetic():
  config = config_lib.base_config()
  config.model.update(vocab_size=100, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                      max_position_embeddings=32, type_vocab_size=2)
  config.data.update(max_len=32, buckets=(32,))
  config.data.label_names = ('a', 'b', 'c')
  info = model_info.describe(config)
  matmul = 4 * 8 * 8 + 8 * 16 + 16 * 8 + 8 * 8 + 8 * 3  # q k v out, mlp in/out, pooler, classifier
  assert info['train_flops_per_token'] == 6 * matmul + 12 * 1 * 32 * 8
  assert info['embedding_params'] == (100 + 32 + 2) * 8
  # Parameters and AdamW's two moments in float32, plus its step counters.
  assert 0 <= info['train_state_bytes'] - 3 * 4 * info['params'] <= 16


def test_command_prints_the_counts():
  run = subprocess.run([sys.executable, '-m', 'llmjax.model_info',
                        f'--config={REPO}/configs/bert_classify.py', '--config.model.init_from='],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
  assert run.returncode == 0, run.stderr
  assert 'bert 109,482,240' in run.stdout and 'train FLOPs/token' in run.stdout


def test_architecture_fields_that_default_to_none_are_overridable_from_the_command_line():
  """num_kv_heads defaults to None (= num_heads); 2 of 4 heads halves the tiny GPT's k and v."""
  run = subprocess.run([sys.executable, '-m', 'llmjax.model_info',
                        f'--config={REPO}/configs/gpt_lm.py:tiny', '--config.model.num_kv_heads=2'],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
  assert run.returncode == 0, run.stderr
  config = load_config('gpt_lm', 'tiny')
  assert config.model.num_kv_heads is None
  full = model_info.describe(config)['params']
  # Per layer, k and v lose 2 heads of 8: kernels 32 x 2 x 8 and biases 2 x 8, each.
  assert f'parameters          {full - 2 * 2 * (32 * 2 * 8 + 2 * 8):,}' in run.stdout


def test_t5_paper_configs_and_encoder_decoder_flops():
  assert model_info.describe(load_config('t5_span', 't5_small'))['params'] == 60_506_624  # t5-small
  v1_1 = model_info.describe(load_config('t5_span', 't5_v1_1_small'))
  assert v1_1['params'] == 76_961_152  # transformers T5ForConditionalGeneration, t5-v1_1-small
  assert v1_1['optimizer_state_bytes'] < v1_1['params']  # Adafactor's factored moments

  config = load_config('t5_span', 'tiny')  # d_model 32, 4 heads x d_kv 8, d_ff 64, 2 + 2 layers
  info = model_info.describe(config)
  inputs, targets = 32, 8  # T5's lengths for 32 inputs: 34 raw tokens, 8 targets
  attention = 4 * 32 * 32  # q, k, v, out
  encoder, decoder, head = 2 * (attention + 2 * 32 * 64), 2 * (2 * attention + 2 * 32 * 64), 356 * 32
  memory = 2 * 2 * 32 * 32  # cross-attention's k and v act on the encoder's outputs: every input
  example = (6 * ((encoder + memory) * inputs + (decoder - memory + head) * targets)
             + 12 * 32 * (2 * inputs ** 2 + 2 * (targets ** 2 + targets * inputs)))
  assert info['train_flops_per_token'] == example / (inputs + targets)
  config.model.scan_layers = True  # The blocks' params stacked under {encoder, decoder}/layers.
  assert model_info.describe(config)['train_flops_per_token'] == example / (inputs + targets)


def test_bert_base_pretraining_config_is_hf_bert_for_masked_lm():
  info = model_info.describe(load_config('bert_mlm', 'bert_base'))
  assert info['params_by_module']['bert'] == 109_482_240 - (768 * 768 + 768)  # no pooler
  assert info['params'] == 109_514_298  # transformers BertForMaskedLM(BertConfig())


def test_masked_lm_counts_its_tied_decoder_at_every_position():
  # transformers' BertForMaskedLM computes the vocabulary logits at every position: so does the count.
  config = load_config('bert_mlm', 'bert_base')
  info = model_info.describe(config)
  layer = 4 * 768 * 768 + 2 * 768 * 3072
  kernels = 12 * layer + 768 * 768  # the layers and the head's transform (no pooler in MLM)
  assert info['train_flops_per_token'] == 6 * (kernels + 30522 * 768) + 12 * 12 * 128 * 768
