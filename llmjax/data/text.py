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
'validation[:1000]'}) and `data.text_key` (optional, default 'text').
"""

from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from llmjax.data import tfds_sources
from llmjax.errors import UserError


class TextSource:
  """Random-access view of a TFDS data source as the `str` of one feature of each example."""

  def __init__(self, source: Sequence[Any], text_key: str):
    self._source = source
    self.text_key = text_key

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> str:
    value = self._source[index][self.text_key]
    # ArrayRecord gives text as bytes (numpy or Python); mocks may give str.
    if isinstance(value, np.ndarray):
      value = value.item()
    return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def open_text(data: ml_collections.ConfigDict) -> dict[str, TextSource]:
  """Opens `data.name` (preparing llmjax's own builders when needed) as text sources per split."""
  split_specs = dict(data.splits)
  if not split_specs:
    raise UserError(f'config.data.splits is empty for {data.name!r}: add e.g. '
                    "--config.data.splits=\"{'train': 'train'}\"")
  text_key = data.get('text_key', 'text')
  sources = tfds_sources.open_splits(data.name, split_specs, tfds_sources.resolve_data_dir(data))
  features = next(iter(sources.values())).dataset_info.features
  if text_key not in features:
    raise UserError(f'dataset {data.name!r} has no feature {text_key!r} (features: '
                    f'{sorted(features.keys())}): set config.data.text_key')
  if not isinstance(features[text_key], tfds.features.Text):
    raise UserError(f'feature {text_key!r} of {data.name!r} is not text: set config.data.text_key '
                    'to a string feature')
  return {split: TextSource(source, text_key) for split, source in sources.items()}
