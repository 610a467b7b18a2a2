"""Opening TFDS datasets as random-access ArrayRecord sources, for every input pipeline.

`open_splits(name, split_specs, data_dir)` returns one `tfds` data source per split. llmjax's own
builders (`LOCAL_BUILDERS`, whose sources come from the asset cache) are prepared on first use;
standard TFDS datasets are opened (or downloaded and prepared, where the network allows) through
`tfds.data_source`. Used by the classification pipeline and by `llmjax.data.text`.
"""

from collections.abc import Iterator, Sequence
import contextlib
import fcntl
import importlib
import os
import pathlib
from typing import Any

from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from llmjax import assets
from llmjax.errors import UserError

# llmjax's builders: dataset name -> module that registers it with TFDS when imported.
LOCAL_BUILDERS = {
    'movie_reviews': 'llmjax.data.movie_reviews',
    'enwiki_sample': 'llmjax.data.enwiki_sample',
    'bbc_news': 'llmjax.data.bbc_news',
    'wnut16': 'llmjax.data.wnut16',
    'oanc_pos': 'llmjax.data.oanc_pos',
    'bible_en_es': 'llmjax.data.bible',
}
# TFDS packages whose builders are imported lazily; `tfds.builder` only finds e.g. `glue` once its
# package has been imported (the new-style `datasets/` builders such as imdb_reviews are found
# without this).
_TFDS_BUILDER_PACKAGES = ('text', 'structured', 'summarization', 'question_answering', 'translate',
                          'text_simplification')


def resolve_data_dir(data: ml_collections.ConfigDict) -> pathlib.Path:
  """config.data.data_dir, or `$LLMJAX_CACHE/tensorflow_datasets` when it is empty."""
  return pathlib.Path(data.data_dir or assets.cache_dir() / 'tensorflow_datasets').expanduser()


def open_splits(name: str, split_specs: dict[str, str],
                data_dir: pathlib.Path) -> dict[str, Sequence[Any]]:
  """Returns a TFDS data source per split; prepares the dataset (as ArrayRecord) when needed."""
  # Processes sharing data_dir (several processes on one host) take turns: two preparing at once
  # collide when TFDS renames its output into place and the loser fails; the one that waits finds
  # the data ready.
  with exclusive(data_dir / '.llmjax-prepare.lock'):
    module = LOCAL_BUILDERS.get(name.split(':')[0].split('/')[0])
    if module is not None:
      # Prepared outside the error translation below: a failure here is an asset problem (already
      # a UserError) or a bug that should keep its traceback. Importing the module registers the
      # builder with TFDS; preparing is idempotent (a prepared dataset is left as it is).
      importlib.import_module(module)
      tfds.builder(name, data_dir=os.fspath(data_dir), file_format='array_record'
                  ).download_and_prepare(file_format='array_record')
    for attempt in range(2):
      try:
        # ArrayRecord is the random-access format that needs no TensorFlow.
        return dict(tfds.data_source(name, split=split_specs, data_dir=os.fspath(data_dir),
                                     download=True, builder_kwargs={'file_format': 'array_record'}))
      except tfds.core.DatasetNotFoundError as e:
        if attempt:
          raise UserError(f'unknown dataset config.data.name={name!r}: use one of '
                          f'{", ".join(LOCAL_BUILDERS)} or a TFDS name such as glue/sst2, '
                          'imdb_reviews or c4') from e
        _import_tfds_builders()
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Typically: no network to download from, data prepared in another format, a bad split
        # string. Name the cause in one line; the chained traceback keeps the details.
        cause = (str(e).strip().splitlines() or [''])[0][:300]
        raise UserError(
            f'cannot open TFDS dataset {name!r} splits {split_specs} in {data_dir} '
            f'({type(e).__name__}: {cause}): check the split names, or prepare it as ArrayRecord '
            'on a machine with internet (tfds.data_source(name, data_dir=..., '
            "builder_kwargs={'file_format': 'array_record'})) and copy data_dir") from e
  raise AssertionError('unreachable')


@contextlib.contextmanager
def exclusive(lock_path: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive lock on lock_path (an advisory flock, released if the process dies)."""
  lock_path.parent.mkdir(parents=True, exist_ok=True)
  with open(lock_path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _import_tfds_builders() -> None:
  """Imports TFDS's lazily loaded builder packages so that `tfds.builder` can find e.g. glue."""
  for package in _TFDS_BUILDER_PACKAGES:
    try:
      importlib.import_module(f'tensorflow_datasets.{package}')
    except ImportError as e:  # Some builders need optional packages; the others still register.
      logging.debug('could not import tensorflow_datasets.%s: %s', package, e)
