"""`python -m mcl.report`: see `mcl.report.cli`."""

import sys

from mcl.report.cli import main

sys.exit(main())
