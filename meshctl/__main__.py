import sys

from meshctl.main import main

sys.exit(main())
