"""Bundle tooling: the catalogue of LiteZoo bundles, the generator that writes their configs, and ``litezoo verify``."""
