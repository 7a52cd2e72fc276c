"""`python -m explorer`. A job started by the app reports that it is alive before the CLI's
imports (PyTorch alone takes seconds), so its progress bar moves as soon as the process runs."""

import sys

from .store.jobs import announce

announce(sys.argv[1:])

from .cli import main  # noqa: E402

main()
