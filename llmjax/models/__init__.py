"""Model registry: `config.model` -> a network, and the pretrained weights it starts from."""

import dataclasses

import flax.linen as nn
import ml_collections
from absl import logging

from llmjax import assets
from llmjax.models import bert, hf_bert

# Keys of config.model that describe the architecture (the rest: name, init_from).
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(bert.BertConfig))


def bert_config(model_config: ml_collections.ConfigDict) -> bert.BertConfig:
  return bert.BertConfig(**{k: model_config[k] for k in ARCH_FIELDS})


def resolve(config: ml_collections.ConfigDict) -> None:
  """Takes a pretrained model's architecture from its config.json into `config.model`."""
  if not config.model.init_from:
    return
  arch = hf_bert.load_config(assets.resolve(config.model.init_from))
  changed = {k: v for k, v in arch.items() if config.model[k] != v}
  if changed:
    logging.info('Architecture from %s: %s', config.model.init_from, changed)
  config.model.update(arch)


def build(model_config: ml_collections.ConfigDict, num_labels: int) -> nn.Module:
  return bert.BertForSequenceClassification(bert_config(model_config), num_labels)


def pretrained(model_config: ml_collections.ConfigDict) -> dict:
  """The pretrained weights (numpy, in the layout of `build`'s params) named by `init_from`."""
  return hf_bert.import_params(assets.resolve(model_config.init_from), bert_config(model_config))


def export(params, model_config: ml_collections.ConfigDict, out_dir, label_names: list[str]) -> None:
  """Writes `params` as a Hugging Face directory that transformers and `init_from` can load."""
  hf_bert.export(params, bert_config(model_config), out_dir, len(label_names),
                 dict(enumerate(label_names)))
