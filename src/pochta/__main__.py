"""`python -m pochta` is the `pochta` command."""

from pochta.cli.main import main

if __name__ == "__main__":
    main()
