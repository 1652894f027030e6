"""Start the application: ``python -m litezoo.deploy`` or, as a MAP does, ``python <this folder>``."""

if __package__:
    from .app import main
else:  # run as a folder: the folder itself is on sys.path
    from app import main

main()
