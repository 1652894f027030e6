"""Start the MONAI Deploy application as a MAP does: ``python apps/deploy -i <study> -o <output> -m <bundle>``.

The folder holds ``app.py`` (the pipeline), ``app.yaml`` and ``requirements.txt`` (what ``monai-deploy package``
needs to build a MAP). It runs in its own environment with the Deploy SDK and imports no ``litezoo`` module: the
bundle it is given brings its own vendored copy (see ``litezoo.tools.bundles.package``).
"""

from app import main  # the folder itself is on sys.path when it is run as a folder

main()
