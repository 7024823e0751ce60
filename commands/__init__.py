"""The ``infermatrix`` program (commands/main.py): the top layer, one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and is imported
only when its subcommand runs, so ``infermatrix --help`` imports neither torch nor pandas.
"""
