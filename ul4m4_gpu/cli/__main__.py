"""``python -m ul4m4_gpu.cli``: the ``ul4m4`` command."""

import sys

from .commands import main

sys.exit(main())
