"""python -m lenet5x: the same as the `lenet5x` command (cli.main)."""

import sys

from .cli import main

sys.exit(main())
