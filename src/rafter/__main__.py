"""``python -m rafter ...``: the same as the ``rafter`` command."""

import sys

if __name__ == "__main__":
    from rafter._cli import main

    sys.exit(main())
