"""Model registry: `config.model` -> a network, the pretrained weights it starts from, and export.

`config.model` holds `name` (a key of FAMILIES), `init_from` ('' = random init; 'asset:NAME' or a
path = a Hugging Face directory whose architecture replaces the config's), and every field of the
family's architecture dataclass. `model_config(name)` gives those defaults.
"""

import dataclasses
import typing
from collections.abc import Callable
from types import ModuleType, SimpleNamespace

import flax.linen as nn
import ml_collections
from ml_collections import config_dict
from absl import logging

from llmjax import assets
from llmjax.errors import UserError
from llmjax.models import bert, gpt, hf_bert, hf_gpt2, hf_t5, t5


@dataclasses.dataclass(frozen=True)
class Family:
  config_cls: type            # The architecture dataclass.
  build: Callable[..., nn.Module]  # (architecture, num_labels) -> module
  # load_config / import_params / export in the Hugging Face format
  hf: ModuleType | SimpleNamespace


FAMILIES = {
    'bert_classifier': Family(bert.BertConfig,
                              lambda arch, num_labels: bert.BertForSequenceClassification(
                                  arch, num_labels), hf_bert),
    # A label per token (NER, POS tagging): the encoder without its pooler; exports a Hugging Face
    # `BertForTokenClassification`.
    'bert_token_classifier': Family(bert.BertConfig,
                                    lambda arch, num_labels: bert.BertForTokenClassification(
                                        arch, num_labels), hf_bert.TOKEN_CLASSIFIER),
    # Masked-LM pre-training of the same encoder; exports a Hugging Face `BertForMaskedLM`.
    'bert_mlm': Family(bert.BertConfig, lambda arch, num_labels: bert.BertForMaskedLM(arch),
                       hf_bert.MASKED_LM),
    'gpt': Family(gpt.GPTConfig, lambda arch, num_labels: gpt.GPT(arch), hf_gpt2),
    't5': Family(t5.T5Config, lambda arch, num_labels: t5.T5(arch), hf_t5),
}


def family(model_config: ml_collections.ConfigDict) -> Family:
  if model_config.name not in FAMILIES:
    raise UserError(f'config.model.name={model_config.name!r} is not a known model: use one of '
                    f'{", ".join(FAMILIES)}')
  return FAMILIES[model_config.name]


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.model` for family `name`: its architecture defaults, then `overrides`."""
  arch = dataclasses.asdict(FAMILIES[name].config_cls())
  for field in dataclasses.fields(FAMILIES[name].config_cls):
    if arch[field.name] is None:
      # A plain None field cannot be overridden from the command line; a typed placeholder can.
      kind, = (t for t in typing.get_args(field.type) if t is not type(None))
      arch[field.name] = config_dict.placeholder(kind)
  c = ml_collections.ConfigDict(dict(name=name, init_from='', **arch))
  c.update(overrides)
  return c


def arch_fields(name: str) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(FAMILIES[name].config_cls))


def architecture(model_config: ml_collections.ConfigDict):
  """The family's architecture dataclass from `config.model`."""
  fam = family(model_config)
  return fam.config_cls(**{k: model_config[k] for k in arch_fields(model_config.name)
                           if k in model_config})


def resolve(config: ml_collections.ConfigDict) -> None:
  """Takes a pretrained model's architecture from its config.json into `config.model`."""
  if not config.model.init_from:
    return
  arch = family(config.model).hf.load_config(assets.resolve(config.model.init_from))
  changed = {k: v for k, v in arch.items() if config.model.get(k) != v}
  if changed:
    logging.info('Architecture from %s: %s', config.model.init_from, changed)
  config.model.update(arch)


def build(model_config: ml_collections.ConfigDict, num_labels: int | None = None) -> nn.Module:
  return family(model_config).build(architecture(model_config), num_labels)


def pretrained(model_config: ml_collections.ConfigDict) -> dict:
  """The pretrained weights (numpy, in the layout of `build`'s params) named by `init_from`."""
  return family(model_config).hf.import_params(assets.resolve(model_config.init_from),
                                               architecture(model_config))


def export_unsupported(model_config: ml_collections.ConfigDict) -> str | None:
  """Why `export` cannot write this architecture in the Hugging Face format (None: it can)."""
  check = getattr(family(model_config).hf, 'unsupported', None)
  return check(architecture(model_config)) if check else None


def export(params, model_config: ml_collections.ConfigDict, out_dir,
           label_names: list[str] | None = None) -> None:
  """Writes `params` as a Hugging Face directory that transformers and `init_from` can load."""
  if model_config.name == 'bert_classifier' and not label_names:  # A regression head.
    hf_bert.export(params, architecture(model_config), out_dir, 1, regression=True)
  elif model_config.name in ('bert_classifier', 'bert_token_classifier'):
    family(model_config).hf.export(params, architecture(model_config), out_dir, len(label_names),
                                   dict(enumerate(label_names)))
  else:
    family(model_config).hf.export(params, architecture(model_config), out_dir)
