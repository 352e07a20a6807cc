"""``python -m difflab ...`` (and ``torchrun -m difflab ...``): the ``difflab`` command."""
import sys

from .cli import main

sys.exit(main())
