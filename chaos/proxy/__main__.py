"""``python -m chaos.proxy [--listen 127.0.0.1:8474]``: the fault proxy in the foreground."""

import sys

from chaos.proxy.cli import main

sys.exit(main())
