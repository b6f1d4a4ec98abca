"""``python -m aepipe.cli``: the ``aepipe`` program."""

from aepipe.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    main()
