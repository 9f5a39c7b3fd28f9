"""The built-in tools, one module each (a new tool is one file, listed in ``registry``)."""
