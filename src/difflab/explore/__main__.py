"""``python -m difflab.explore NAME OUT [--budget JSON]``: the child process that trains a built-in model of the
explorer on first use (:func:`difflab.explore.builtin.main`)."""
import sys

from .builtin import main

sys.exit(main())
