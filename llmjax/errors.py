"""The one exception type for mistakes a user can fix (config, paths, assets, data).

`main` prints its message as a single line and exits with status 2; anything else is a bug and keeps
its traceback. Messages name the cause and the fix, e.g.
"config.optim.lr=0 must be > 0: pass --config.optim.lr=3e-5".
"""


class UserError(Exception):
  """A problem the user can fix; the message is one line naming the cause and the fix."""
