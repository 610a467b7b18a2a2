"""What a config's model costs, without allocating it: parameters, training FLOPs per token, and the
memory of its train state.

  python -m llmjax.model_info --config=configs/bert_classify.py [--config.KEY=VALUE ...]

Parameters come from `jax.eval_shape` of the model's init, so a model of any size is counted in
seconds on a laptop. FLOPs per token for training follow Kaplan et al. (2020) and MaxText: 6 per
parameter of every matrix multiply (forward 2, backward 4; embedding lookups are not multiplies) plus
attention's 12 * layers * length * width (QK^T and AV, forward and backward). The train state is the
parameters plus AdamW's two moments, all in `param_dtype`; gradients add one more copy while a step
runs. Activations depend on the batch and on remat and are not counted here.
"""

import sys

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from llmjax import models, optim
from llmjax.errors import UserError
from llmjax.tasks.causal_lm import CausalLMTask
from llmjax.tasks.classification import ClassificationTask

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].')


def describe(config: ml_collections.ConfigDict, num_labels: int = 2) -> dict:
  """Counts for `config.model` at sequence length `config.data.max_len` (a classifier gets
  `num_labels` classes: the data, which knows the real number, is not opened)."""
  models.resolve(config)
  if config.task.name == 'classification':
    task = ClassificationTask(models.build(config.model, num_labels), num_labels)
  else:
    task = CausalLMTask(models.build(config.model))
  params = nn.unbox(jax.eval_shape(lambda rng: task.init(rng, 8), jax.random.key(0)))
  leaves = jax.tree_util.tree_leaves_with_path(params)
  total = sum(x.size for _, x in leaves)
  # Embedding tables are looked up, not multiplied (a tied output head would count once more).
  lookups = sum(x.size for p, x in leaves if optim.path_str(p).endswith('embedding'))
  matmul = sum(x.size for p, x in leaves if optim.path_str(p).endswith('kernel'))
  m = config.model
  if m.get('tie_embeddings'):  # The output layer multiplies by the (shared) embedding table.
    matmul += m.vocab_size * m.hidden_size
  attention = 12 * m.num_layers * config.data.max_len * m.hidden_size
  bytes_per_param = np.dtype(m.param_dtype).itemsize
  by_module = {}
  for p, x in leaves:
    top = optim.path_str(p).split('/')[0]
    by_module[top] = by_module.get(top, 0) + x.size
  return {
      'params': total,
      'params_by_module': by_module,
      'embedding_params': lookups,
      'train_flops_per_token': 6 * matmul + attention,
      'train_state_bytes': 3 * total * bytes_per_param,
      'gradient_bytes': total * bytes_per_param,
  }


def _human(n: float, unit: str = '') -> str:
  for scale, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(n) >= scale:
      return f'{n / scale:.2f} {suffix}{unit}'
  return f'{n:.0f} {unit}'.strip()


def main(argv):
  del argv
  try:
    info = describe(_CONFIG.value)
  except UserError as e:
    print(f'llmjax: error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'parameters          {info["params"]:,}  '
        + ', '.join(f'{k} {v:,}' for k, v in info['params_by_module'].items()))
  print(f'  in embeddings     {info["embedding_params"]:,}')
  print(f'train FLOPs/token   {_human(info["train_flops_per_token"], "FLOP")}')
  print(f'train state         {_human(info["train_state_bytes"], "B")} (params + 2 AdamW moments), '
        f'+ {_human(info["gradient_bytes"], "B")} gradients during a step; activations not counted')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
