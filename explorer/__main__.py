"""`python -m explorer`. A job started by the app reports that it is alive before the CLI's
imports (PyTorch alone takes seconds), so its progress bar moves as soon as the process runs, and
as it ends, however it ends, it starts the next job waiting in line.

The job queue's own commands (`submit`, `jobs`, `cancel`) are served by `queue_cli` alone, without
the rest of the CLI's imports: a process that only queues or lists jobs never loads PyTorch."""

import sys

from .store.jobs import announce, ended


def main() -> None:
    argv = sys.argv[1:]
    announce(argv)
    try:
        from . import queue_cli

        if argv[:1] and argv[0] in queue_cli.COMMANDS:
            queue_cli.main()
        else:
            from .cli import main as full

            full()
    finally:
        ended(argv)


if __name__ == "__main__":
    main()
