"""``python -m loader``: the ``eligibility-loader`` CLI (``loader.cli``)."""

from loader.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
