import sys

from superclass.cli import main

sys.exit(main())
