"""`python -m polyfit` runs the command-line interface."""

from polyfit.cli import main

main()
