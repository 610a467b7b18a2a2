"""Plain-text documents for language-model pretraining, from TFDS datasets.

`open_text(config.data)` returns, per configured split, a random-access source of `str` documents
(`len(source)`, `source[i]`), ready for a grain `MapDataset.source`. The dataset is
`config.data.name`:

  * `enwiki_sample` (llmjax's builder, prepared from the `enwiki-sample` asset on first use; also
    `enwiki_sample/lee`), text feature 'text';
  * any TFDS text corpus with a string feature, e.g. `c4` (or `c4/en`), `wikipedia/20230601.en`,
    `lm1b`, all with feature 'text'. These must already be prepared as ArrayRecord in
    `config.data.data_dir` where there is no network.

Config fields read: `data.name`, `data.data_dir` (empty: `$LLMJAX_CACHE/tensorflow_datasets`),
`data.splits` (split name -> TFDS split string, e.g. {'train': 'train', 'validation':
'validation[:1000]'}) and `data.text_key` (optional, default 'text'). Translation corpora (e.g.
`wmt14_translate/de-en`, features 'de' and 'en') open as (source, target) pairs with
`open_text(data, keys=('en', 'de'))`.
"""

from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from llmjax.data import tfds_sources
from llmjax.errors import UserError


class TextSource:
  """Random-access view of a TFDS data source as the `str` of one feature of each example, or the
  tuple of `str` of several (a translation pair)."""

  def __init__(self, source: Sequence[Any], text_keys: str | Sequence[str]):
    self._source = source
    self.text_keys = (text_keys,) if isinstance(text_keys, str) else tuple(text_keys)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str | tuple[str, ...]:
    example = self._source[index]
    texts = tuple(as_str(example[key]) for key in self.text_keys)
    return texts[0] if len(texts) == 1 else texts


def as_str(value) -> str:
  """A text feature as `str`: ArrayRecord gives bytes (numpy or Python); mocks may give str."""
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def open_text(data: ml_collections.ConfigDict,
              keys: Sequence[str] | None = None) -> dict[str, TextSource]:
  """Opens `data.name` (preparing llmjax's own builders when needed) as text sources per split:
  of `data.text_key`, or of the features `keys` together (e.g. a translation's two languages)."""
  split_specs = dict(data.splits)
  if not split_specs:
    raise UserError(f'config.data.splits is empty for {data.name!r}: add e.g. '
                    "--config.data.splits=\"{'train': 'train'}\"")
  keys = (data.get('text_key', 'text'),) if keys is None else tuple(keys)
  setting = 'config.data.text_key' if len(keys) == 1 else 'config.data.text_keys'
  sources = tfds_sources.open_splits(data.name, split_specs, tfds_sources.resolve_data_dir(data))
  features = next(iter(sources.values())).dataset_info.features
  for key in keys:
    if key not in features:
      raise UserError(f'dataset {data.name!r} has no feature {key!r} (features: '
                      f'{sorted(features.keys())}): set {setting}')
    if not isinstance(features[key], tfds.features.Text):
      raise UserError(f'feature {key!r} of {data.name!r} is not text: set {setting} to string '
                      'features')
  return {split: TextSource(source, keys) for split, source in sources.items()}
