import sys

from alphaprune.cli import main

sys.exit(main())
