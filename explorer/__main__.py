"""`python -m explorer`. A job started by the app reports that it is alive before the CLI's
imports (PyTorch alone takes seconds), so its progress bar moves as soon as the process runs, and
as it ends, however it ends, it starts the next job waiting in line."""

import sys

from .store.jobs import announce, ended

announce(sys.argv[1:])
try:
    from .cli import main

    main()
finally:
    ended(sys.argv[1:])
