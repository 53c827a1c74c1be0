"""`python -m builder.cli`, as users and scripts have run it: the `builder` command (builder.host.cli)."""

from builder.host.cli import main

if __name__ == "__main__":
    main()
