"""Bundle tooling: the catalogue of LiteZoo bundles, the generator that writes their configs from templates,
``litezoo verify``, and packaging into self-contained zips."""
