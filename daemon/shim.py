"""Placeholder entry point until its issue lands."""

import sys


def main() -> int:
    print("shim: not yet implemented in this build", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
