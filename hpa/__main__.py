"""``python -m hpa`` runs the command-line interface."""

from hpa.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
