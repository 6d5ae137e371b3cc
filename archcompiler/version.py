"""archc's version: in a module of its own, so that the model file, the report and ``archc
--version`` read it without importing the package root."""

__version__ = "0.1.0"
