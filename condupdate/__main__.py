import sys

from condupdate.cli import main

sys.exit(main())
