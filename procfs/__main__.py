"""python -m procfs: the mmemu command line."""
import sys

from procfs.cli import main

sys.exit(main())
