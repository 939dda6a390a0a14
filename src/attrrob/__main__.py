"""`python -m attrrob <verb> ...`: the same as the `attrrob` command."""

from attrrob.cli import main

if __name__ == "__main__":
    main()
