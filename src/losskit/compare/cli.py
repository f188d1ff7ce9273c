"""Arguments and entry point of ``losskit compare`` (being written)."""


def add_arguments(parser):
    parser.add_argument("task")


def run(args) -> int:
    raise SystemExit("losskit compare: not yet available")
