"""``python -m litezoo``: the collection's command line (see :mod:`litezoo.tools.cli`)."""

from litezoo.tools.cli import main

if __name__ == "__main__":
    main()
