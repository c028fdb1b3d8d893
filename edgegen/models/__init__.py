"""One file per generator family."""
