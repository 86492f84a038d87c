"""The `fastprune` command line: `fastprune --help` lists the commands."""
