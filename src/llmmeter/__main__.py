"""``python -m llmmeter``: the same command line as the ``llmmeter`` script."""

from llmmeter.cli import main

raise SystemExit(main())
