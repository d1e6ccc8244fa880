"""`python -m janitor` runs the command-line interface."""

from janitor.cli import main

main()
