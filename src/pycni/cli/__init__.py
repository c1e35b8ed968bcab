"""The ``pycni`` command."""
