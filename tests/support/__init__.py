"""Helpers the tests and benchmarks share: real clients, processes, databases and fixtures'
building blocks. Named so that none shadows a module of the package."""
