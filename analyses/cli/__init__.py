"""The ``fmi`` command line. It sits above the library and the analyses and is the only place
that imports both for the shell."""
