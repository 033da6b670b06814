"""``python -m pbx`` is the ``asyncpbx`` command."""

import sys

from pbx.cli import main

sys.exit(main())
