"""The error every CLI verb raises for bad user input (its own module so it has one identity
whether the CLI runs as the ``qubelet`` script or as ``python -m qubelet.cli``)."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""
