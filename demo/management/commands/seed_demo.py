from demo.seed import Command  # noqa: F401
