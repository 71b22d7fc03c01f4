import sys

from mnc.cli import main

sys.exit(main())
