"""One module per command: HELP (one line), add_arguments(parser), run(args) -> exit code."""
