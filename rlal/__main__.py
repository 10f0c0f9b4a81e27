import sys

from rlal.cli import main

sys.exit(main())
