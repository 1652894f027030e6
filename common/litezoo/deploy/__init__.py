"""The MONAI Deploy application folder: ``app.py`` (the pipeline), ``app.yaml`` and ``requirements.txt`` (what
``monai-deploy package`` needs to build a MAP). It runs in its own environment with the Deploy SDK and imports no
``litezoo`` module: the bundle it is given brings its own vendored copy (see ``litezoo.bundle.package``).
"""
