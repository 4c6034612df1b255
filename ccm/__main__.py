"""``python -m ccm``: the same as the ``ccm`` command."""

from ccm.cli import main

if __name__ == "__main__":
    main()
