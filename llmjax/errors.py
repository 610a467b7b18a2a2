"""The one exception type for mistakes a user can fix (config, paths, assets, data).

Every command runs through `run`, which prints its message as a single line and exits with status 2;
anything else is a bug and keeps its traceback. Messages name the cause and the fix, e.g.
"config.optim.lr=0 must be > 0: pass --config.optim.lr=3e-5".
"""

import sys

from absl import app, logging


class UserError(Exception):
  """A problem the user can fix; the message is one line naming the cause and the fix."""


def run(main) -> None:
  """absl's `app.run(main)` for an llmjax command: a UserError, whether found while the flags are
  parsed (a bad config argument) or during the run (a bad value, a missing asset), is one line."""
  try:
    app.run(main)
  except UserError as e:
    logging.flush()
    print(f'llmjax: error: {e}', file=sys.stderr)
    sys.exit(2)
