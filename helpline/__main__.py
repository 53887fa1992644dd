"""`python -m helpline` is the `helpline` command."""

from helpline.cli.app import main

if __name__ == "__main__":
    main()
