"""``python -m zkalloc_np``: the command line (zkalloc_np.cli)."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
