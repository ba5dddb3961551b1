from alphaprune.cli import entry

entry()
