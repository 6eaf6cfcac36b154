"""The vanilla-transformer commands, one a module: NAME, HELP, add_arguments(parser) and run(args)."""
