import sys

from pipejupyter.cli.main import main

sys.exit(main())
