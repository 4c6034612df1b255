"""``python -m ccm``: the same as the ``ccm`` command."""

from ccm.app.main import main

if __name__ == "__main__":
    main()
