"""One module per command-line verb (see gpmask.cli)."""
