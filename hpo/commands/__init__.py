"""One module per saan-hpo subcommand: add_arguments(parser) and run(args) -> exit code."""
