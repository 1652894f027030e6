"""LiteZoo's benchmarks, outside the installed library: ``python -m benchmarks <name>`` from a checkout.

Each benchmark returns a markdown report, prints it and writes it to a file; targets are printed with PASS/MISS.
"""
