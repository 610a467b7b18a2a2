"""llmjax: Transformer language models in JAX/Flax, trained from a config file on a device mesh."""

import os as _os
import sys as _sys

from llmjax import host as _host

# First, before JAX is imported: a command runs again with malloc tunables (llmjax/host.py).
if _host.is_command(_sys.orig_argv):
  _host.exec_with_malloc_tunables()

from llmjax import threefry as _threefry  # noqa: E402

# Dropout's random bits, the same as JAX's, without the rolled loop JAX lowers them to on CPU.
# LLMJAX_UNROLLED_THREEFRY=0 keeps JAX's lowering: a slower step that compiles faster, for runs so
# small that compiling is most of their time (the test suite's).
if _os.environ.get('LLMJAX_UNROLLED_THREEFRY') != '0':
  _threefry.register()
