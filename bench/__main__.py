"""``python -m bench``: run every benchmark available on this machine (see :mod:`bench.runner`)."""

import sys

from bench.runner import main

sys.exit(main())
