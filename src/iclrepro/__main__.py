import sys

from iclrepro.cli import main

sys.exit(main())
