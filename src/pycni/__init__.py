"""pycni: the container-networking stack (CNI spec, runtime, plugins) in Python."""

__version__ = "0.1.0"
