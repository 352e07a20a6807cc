"""``python -m difflab.cli ...``"""
import sys

from . import main

sys.exit(main())
