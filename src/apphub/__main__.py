"""`python -m apphub` is the `apphub` command."""

from apphub.cli import main

main()
