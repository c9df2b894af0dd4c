"""The user interface: the ``tfmollify`` command line and the demo."""
