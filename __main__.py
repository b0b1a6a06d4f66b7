"""`python -m glasszoo` = the `glasszoo` command."""

from glasszoo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
