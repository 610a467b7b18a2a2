"""What a config's model costs, without allocating it: parameters, training FLOPs per token, and the
memory of its train state.

  python -m llmjax.model_info --config=configs/bert_classify.py [--config.KEY=VALUE ...]

Parameters come from `jax.eval_shape` of the model's init, so a model of any size is counted in
seconds on a laptop. FLOPs per token for training follow Kaplan et al. (2020) and MaxText: 6 per
parameter of every matrix multiply (forward 2, backward 4; embedding lookups are not multiplies) plus
attention's 12 * layers * length * width (QK^T and AV, forward and backward). An encoder-decoder
counts per (input + target) token: its encoder runs over `data.max_len` input tokens and its decoder
over the task's target length (T5's 114 for 512 inputs), with self-, causal and cross-attention at
their own lengths. The train state is the parameters plus the optimizer's state as `optim.make`
builds it (AdamW: two moments; Adafactor: factored second moments) for the parameters that train
(all, unless `lora` or `optim.freeze` say otherwise; LoRA's adapters count as parameters); gradients
add one more copy of the parameters while a step runs. Activations depend on the batch and on remat
and are not counted.
"""

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from llmjax import errors, lora, models, optim, tasks
from llmjax.data import translation
from llmjax.tasks import masking

def describe(config: ml_collections.ConfigDict) -> dict:
  """Counts for `config.model` at sequence length `config.data.max_len` (the data is not opened: a
  classifier has the classes of `config.data.label_names`, two when it is empty)."""
  models.resolve(config)
  task = tasks.task_for(config)
  params = nn.unbox(jax.eval_shape(lambda rng: task.init(rng, 8), jax.random.key(0)))
  leaves = [(optim.path_str(p), x.size) for p, x in jax.tree_util.tree_leaves_with_path(params)]
  total = sum(size for _, size in leaves)
  # Embedding tables are looked up, not multiplied (a tied output head multiplies once more).
  lookups = sum(size for p, size in leaves if p.endswith('embedding'))
  m = config.model
  by_module = {}
  for p, size in leaves:
    by_module[p.split('/')[0]] = by_module.get(p.split('/')[0], 0) + size
  if m.name == 't5':
    inputs, targets = config.data.max_len, _target_length(config)
    flops = train_flops(config, params, inputs, targets) / (inputs + targets)
  else:
    flops = train_flops(config, params, config.data.max_len) / config.data.max_len
  bytes_per_param = np.dtype(m.param_dtype).itemsize
  tx = optim.make(config.optim, max(config.num_train_steps, 1), lora.trainable(config))
  opt_state = jax.eval_shape(tx.init, params)
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt_state))
  return {
      'params': total,
      'trainable_params': lora.parameter_counts(params, config)[0],
      'params_by_module': by_module,
      'embedding_params': lookups,
      'train_flops_per_token': flops,
      'optimizer_state_bytes': opt_bytes,
      'train_state_bytes': total * bytes_per_param + opt_bytes,
      'gradient_bytes': total * bytes_per_param,
  }


def train_flops(config: ml_collections.ConfigDict, params, inputs: int, targets: int = 0) -> float:
  """Training FLOPs of one example of `inputs` tokens (and, for an encoder-decoder, `targets` decoder
  tokens): 6 per weight of each matrix multiply per token it acts on, plus attention's QK^T and AV
  (12 * query x key pairs * width per layer, forward and backward; causal attention counted whole, as
  MaxText and the PaLM paper count it). `params` may be abstract (ShapeDtypeStructs)."""
  leaves = [(optim.path_str(p), x.size) for p, x in jax.tree_util.tree_leaves_with_path(params)]

  def matmul(prefix='', within=''):
    return sum(size for p, size in leaves
               if p.endswith('kernel') and p.startswith(prefix) and within in p)

  m = config.model
  if m.name == 't5':
    # The encoder's weights act on every input token, and so do cross-attention's keys and values
    # (projections of the encoder's output); the rest of the decoder's and the head's act on every
    # target token; attention on its query x key pairs (self, causal self, cross).
    width = m.num_heads * m.d_kv
    head = m.vocab_size * m.d_model if m.tie_word_embeddings else 0
    decoder_layers = m.num_decoder_layers or m.num_layers
    memory = matmul('decoder/', '/cross_attention/k/') + matmul('decoder/', '/cross_attention/v/')
    return (6 * ((matmul('encoder/') + memory) * inputs
                 + (matmul('decoder/') - memory + matmul('lm_head') + head) * targets)
            + 12 * width * (m.num_layers * inputs ** 2
                            + decoder_layers * (targets ** 2 + targets * inputs)))
  # BERT's masked-LM decoder is always tied to its word embeddings; GPT's when tie_embeddings.
  tied = m.get('tie_embeddings') or m.name == 'bert_mlm'
  head = m.vocab_size * m.hidden_size if tied else 0
  return (6 * (matmul() + head) + 12 * m.num_layers * inputs * m.hidden_size) * inputs


def batch_shape(batch: dict) -> tuple[int, int, int]:
  """(rows, positions the encoder or decoder computes, decoder positions of an encoder-decoder) of a
  task's batch: the shape the model runs on, padding included."""
  inputs = batch['input_ids'] if 'input_ids' in batch else batch['inputs']
  targets = batch['targets'].shape[1] if 'decoder_inputs' in batch else 0
  return inputs.shape[0], inputs.shape[1], targets


def _target_length(config: ml_collections.ConfigDict) -> int:
  """Target tokens per example of an encoder-decoder task (T5's for span corruption)."""
  if config.task.name in translation.PAIR_TASKS:
    return config.data.target_max_len
  return masking.span_corruption_lengths(
      config.data.max_len, noise_density=config.task.noise_density,
      mean_noise_span_length=config.task.mean_noise_span_length)[1]


def human(n: float, unit: str = '') -> str:
  for scale, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(n) >= scale:
      return f'{n / scale:.2f} {suffix}{unit}'
  return f'{n:.0f} {unit}'.strip()


def main(argv):
  del argv
  config = flags.FLAGS.config
  info = describe(config)
  print(f'parameters          {info["params"]:,}  '
        + ', '.join(f'{k} {v:,}' for k, v in info['params_by_module'].items()))
  print(f'  in embeddings     {info["embedding_params"]:,}')
  print(f'  trainable         {info["trainable_params"]:,} '
        f'({100 * info["trainable_params"] / info["params"]:.2f}%)')
  print(f'train FLOPs/token   {human(info["train_flops_per_token"], "FLOP")}')
  print(f'train state         {human(info["train_state_bytes"], "B")} (params + '
        f'{human(info["optimizer_state_bytes"], "B")} {config.optim.name} state), '
        f'+ {human(info["gradient_bytes"], "B")} gradients during a step; activations '
        'not counted')


if __name__ == '__main__':
  # Defined here, not on import: llmjax.bench imports this module and has its own --config.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].')
  flags.mark_flags_as_required(['config'])
  errors.run(main)
