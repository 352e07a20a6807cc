"""Run under ``python -m torch.distributed.run --standalone --nproc-per-node N``: several ``difflab`` commands
in turn in one process group, each given as one argument (a command line), e.g.
``"train --data digits --out RUN --steps 10"``.  Used by tests/test_distributed.py (one launch for all its
multi-process runs: starting the processes costs more than the runs)."""
import shlex
import sys

import torch

from difflab.cli import main

torch.set_num_threads(1)   # two ranks share this machine's two cores
for command in sys.argv[1:]:
    code = main(shlex.split(command))
    if code != 0:
        sys.exit(f"{command!r} exited with {code}")
