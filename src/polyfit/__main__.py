"""`python -m polyfit`: the `polyfit` command (cli.py)."""

from polyfit.cli import main

if __name__ == "__main__":
    main()
