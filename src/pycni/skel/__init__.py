"""Plugin-side SDK: write a CNI plugin in a few lines (see :mod:`pycni.skel.plugin`)."""

from pycni.skel.plugin import CmdArgs, Plugin, Reply

__all__ = ["CmdArgs", "Plugin", "Reply"]
