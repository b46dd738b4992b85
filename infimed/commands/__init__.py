"""One module per subcommand. Each exposes ``register(subparsers)`` which adds its parser and sets
``func=run`` where ``run(args: argparse.Namespace) -> int`` returns the exit status."""
