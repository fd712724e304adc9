"""``python -m qubelet``: the same as the ``qubelet`` console script."""

import sys

from qubelet.cli import main

sys.exit(main())
