"""``python -m litezoo``: the collection's command line (see :mod:`litezoo.cli`)."""

from litezoo.cli import main

if __name__ == "__main__":
    main()
