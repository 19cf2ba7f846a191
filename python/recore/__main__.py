import sys

from recore.cli import main

sys.exit(main())
