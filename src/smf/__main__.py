"""`python -m smf ...` is the `smf` command (what `torchrun -m smf` and `accelerate launch -m smf` run)."""

import sys

from smf.cli import main

sys.exit(main())
