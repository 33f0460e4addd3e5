from vsrft.cli import entry

entry()
