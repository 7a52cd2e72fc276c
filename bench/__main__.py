"""Run every benchmark in bench/ (or the ones named) and print `name: value` lines."""

import importlib
import pkgutil
import sys
from pathlib import Path


def main(names: list[str]) -> None:
    available = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    unknown = set(names) - set(available)
    if unknown:
        sys.exit(f"unknown benchmark {sorted(unknown)[0]!r}; choose from {', '.join(available)}")
    for name in names or available:
        for key, value in importlib.import_module(f"bench.{name}").run().items():
            print(f"{key}: {value}", flush=True)


main(sys.argv[1:])
