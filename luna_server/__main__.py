"""Placeholder entry point until the Luna server issue lands."""

import sys


def main() -> int:
    print("luna-server: not yet implemented in this build", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
