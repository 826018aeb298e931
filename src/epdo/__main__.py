"""``python -m epdo ...`` (and ``torchrun --nproc_per_node=K -m epdo train ...``)."""

from epdo.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
