"""`python -m attrrob.train ...`: the same as `attrrob train ...`."""

from attrrob.cli.train import main

if __name__ == "__main__":
    main()
