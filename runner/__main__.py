import sys

if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
    from .cli_help import text

    print(text(), end="")
    sys.exit(0)

from .app import main  # noqa: E402

main()
